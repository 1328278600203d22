"""Bad input and damage, as a new user or a hostile tester meets them: every case gets a clear message naming
the file or option, the expected exit code, and a cache that is never poisoned by a failed run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nbgraft import __version__
from nbgraft import data as D
from nbgraft.cache import Entry, atomic_write_json
from nbgraft.cli import main as cli_main
from nbgraft.experiments import cached_runs, check_parameters, run_baseline
from nbgraft.teacher import get_teacher, teacher_config, teacher_test_predictions

REPO = Path(__file__).resolve().parents[1]
TINY = ["--profile", "tiny", "--device", "cpu"]


def _good_arrays(n_train=200, n_test=50, classes=10) -> dict:
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes, "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}


def _write(root: Path, **changes) -> Path:
    arrays = {**_good_arrays(), **changes}
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "cifar10.npz", **{k: v for k, v in arrays.items() if v is not None})
    D._LOADED.clear()
    return root / "cifar10.npz"


def _cli(argv, capsys) -> tuple[int, str]:
    code = cli_main(argv)
    return code, capsys.readouterr().err


def _cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --------------------------------------------------------------------------- 1. bad data never trains
@pytest.mark.parametrize("change, says", [
    ({"x_train": np.random.default_rng(0).random((200, 32, 32, 3), dtype=np.float32)}, "dtype float32, expected uint8"),
    ({"y_train": np.arange(150) % 10}, "y_train has shape (150,) for 200 images"),
    ({"x_train": np.zeros((200, 3, 32, 32), dtype=np.uint8)}, "expected (N, 32, 32, 3)"),
    ({"y_test": np.arange(50) % 10 + 5}, "labels 5..14, expected 0..9"),
    ({"x_test": None}, "lacks the arrays ['x_test']"),
])
def test_bad_arrays_stop_with_the_file_and_the_fix(tmp_path, capsys, change, says):
    npz = _write(tmp_path / "data", **change)
    out = tmp_path / "out"
    code, err = _cli(["teacher", "--data-root", str(npz.parent), "--output-root", str(out), *TINY], capsys)
    assert code == 2 and says in err and str(npz) in err and "unpack.py" in err
    assert err.startswith("nbgraft: error:") and err.count("\n") == 1
    assert _cache_files(out) == []  # nothing computed, nothing cached


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not an npz at all"])
def test_unreadable_npz_names_the_file(tmp_path, capsys, content):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10.npz").write_bytes(content)
    D._LOADED.clear()
    code, err = _cli(["teacher", "--data-root", str(tmp_path / "data"), "--output-root", str(tmp_path / "o"), *TINY],
                     capsys)
    assert code == 2 and "cifar10.npz cannot be read as .npz arrays" in err


def test_a_truncated_real_npz_is_refused(tmp_path, data_root):
    (tmp_path / "cifar10.npz").write_bytes((data_root / "cifar10.npz").read_bytes()[:5_000_000])
    D._LOADED.clear()
    with pytest.raises(ValueError, match="cannot be read as .npz arrays"):
        D.load_dataset("cifar10", tmp_path, download=False)


def test_fixing_the_data_changes_every_cache_key(tmp_path):
    _write(tmp_path / "a")
    before = Entry(None, "teacher", teacher_config("cifar10", "tiny", data_root=tmp_path / "a")).key
    arrays = _good_arrays()
    arrays["x_train"][0, 0, 0, 0] ^= 1  # one pixel
    _write(tmp_path / "a", **arrays)
    after = Entry(None, "teacher", teacher_config("cifar10", "tiny", data_root=tmp_path / "a")).key
    assert before != after
    assert (tmp_path / "a" / ".cifar10.npz.fingerprint.json").is_file()  # hashed once, remembered beside the file


def test_data_root_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    D._LOADED.clear()
    code, err = _cli(["teacher", "--data-root", str(f), "--output-root", str(tmp_path / "o"), *TINY], capsys)
    assert code == 2 and "is a file" in err and str(f) in err


# --------------------------------------------------------------------------- 2. damaged cache entries recover
def test_damaged_metrics_are_moved_aside_and_recomputed(tmp_path, capsys):
    for text in ('{"test_accuracy": 1, "wall', "{}", '{"other": 1}', "\x00\x01"):
        e = Entry(tmp_path, "netgraft", {"k": text})
        e.start()
        e.path("metrics.json").write_text(text)
        assert not e.done
        assert not e.dir.exists() and e.dir.with_name(f"{e.key}.damaged-0").is_dir()  # kept, not deleted
        assert "moved the entry to" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_teacher(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_teacher")
    get_teacher("cifar10", "tiny", data_root=data_root, output_root=root, device="cpu")
    return root


def test_a_teacher_read_back_is_shared_until_its_entry_changes(tiny_teacher, data_root, tmp_path):
    out = _copy(tiny_teacher, tmp_path)
    kw = {"data_root": data_root, "output_root": out, "device": "cpu"}
    first, m = get_teacher("cifar10", "tiny", **kw)
    assert get_teacher("cifar10", "tiny", **kw)[0] is first  # read once per process
    shutil.rmtree(Entry(out, "teacher", teacher_config("cifar10", "tiny", data_root=data_root)).dir)
    again, m2 = get_teacher("cifar10", "tiny", **kw)  # trained again: a new entry, not the one in memory
    assert again is not first and m2["test_accuracy"] == pytest.approx(m["test_accuracy"])


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(root, dest)
    return dest


@pytest.mark.parametrize("name", ["model.pt", "test_pred.pt"])
def test_a_damaged_teacher_file_is_recomputed(tiny_teacher, data_root, tmp_path, capsys, name):
    out = _copy(tiny_teacher, tmp_path)
    e = Entry(out, "teacher", teacher_config("cifar10", "tiny", data_root=data_root))
    good = e.metrics()["test_accuracy"]
    e.path(name).write_bytes(e.path(name).read_bytes()[:100])
    _, m = get_teacher("cifar10", "tiny", data_root=data_root, output_root=out, device="cpu")
    assert "moved the entry to" in capsys.readouterr().err and m["test_accuracy"] == pytest.approx(good)
    assert teacher_test_predictions("cifar10", "tiny", data_root=data_root, output_root=out).shape == (500,)


def test_garbage_test_predictions_are_recovered(tiny_teacher, data_root, tmp_path):
    out = _copy(tiny_teacher, tmp_path)
    e = Entry(out, "teacher", teacher_config("cifar10", "tiny", data_root=data_root))
    e.path("test_pred.pt").write_bytes(b"garbage")
    assert teacher_test_predictions("cifar10", "tiny", data_root=data_root, output_root=out).shape == (500,)


def test_a_garbage_resume_checkpoint_restarts_training(data_root, tmp_path, capsys):
    e = Entry(tmp_path, "teacher", teacher_config("cifar10", "tiny", data_root=data_root))
    e.start()
    e.path("resume.pt").write_bytes(b"\x80garbage")
    _, m = get_teacher("cifar10", "tiny", data_root=data_root, output_root=tmp_path, device="cpu")
    assert "training the teacher from its first epoch" in capsys.readouterr().err and len(m["history"]) == 1


def test_table_skips_and_names_unreadable_entries(tmp_path, capsys):
    good = {"method": "kd", "dataset": "cifar10", "test_accuracy": 12.0, "wall_s": 1.0}
    atomic_write_json(tmp_path / "cache" / "kd" / "a" / "metrics.json", good)
    (tmp_path / "cache" / "kd" / "b").mkdir(parents=True)
    (tmp_path / "cache" / "kd" / "b" / "metrics.json").write_text('{"test_acc')
    assert cached_runs("kd", tmp_path) == [good]
    assert "skipping the unreadable cache entry" in capsys.readouterr().err


# --------------------------------------------------------------------------- 3-5. clean errors everywhere
@pytest.mark.parametrize("argv, says", [
    (["graft", "--device", "foo"], "unknown device 'foo'"),
    (["graft", "--dataset", "mnist"], "unknown data set 'mnist'"),
    (["graft", "--teacher", "resnet56", "--dataset", "cifar100"], "exists for cifar10, not cifar100"),
    (["graft", "--shots", "9999", "--profile", "tiny"], "N=9999 shots is more than"),
    (["book", "--chapters", "99"], "no chapter '99'"),
])
def test_expected_failures_print_one_line_and_exit_2(data_root, tmp_path, capsys, argv, says):
    code, err = _cli([*argv, "--data-root", str(data_root), "--output-root", str(tmp_path)], capsys)
    assert code == 2 and says in err and err.startswith("nbgraft: error:") and err.count("\n") == 1


def test_output_root_that_is_a_file(data_root, tmp_path, capsys):
    f = tmp_path / "outputs"
    f.write_text("not a folder")
    code, err = _cli(["teacher", *TINY, "--data-root", str(data_root), "--output-root", str(f)], capsys)
    assert code == 2 and str(f) in err


@pytest.mark.parametrize("seed, says", [("-1", "--seeds"), ("10000000000000000000000", "--seeds"), ("x", "--seeds")])
def test_bad_seeds_name_the_option_and_leave_no_cache(tmp_path, seed, says):
    proc = subprocess.run([sys.executable, "-m", "nbgraft", "graft", "--seeds", seed, "--output-root", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "NBGRAFT_QUIET": "1"})
    assert proc.returncode == 2 and says in proc.stderr and "a seed is a whole number" in proc.stderr
    assert _cache_files(tmp_path) == []


def test_ctrl_c_exits_130_and_says_what_was_kept(monkeypatch, capsys):
    import nbgraft.cli as C

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "cmd_table", interrupted)
    code, err = _cli(["table"], capsys)
    assert code == 130 and "every finished run is in the cache" in err


def test_a_failed_chapter_is_one_line(tmp_path, capsys, monkeypatch):
    import nbgraft.book as B

    def fail(**kw):
        raise B.ChapterFailed("chapter 03_block_grafting failed in cell 2 with ValueError: boom\n"
                              "the executed notebook with the traceback is /x/03.failed.ipynb")

    monkeypatch.setattr(B, "run_book", fail)
    code, err = _cli(["book", "--chapters", "03"], capsys)
    assert code == 2 and err.count("\n") == 1 and "boom" in err and "03.failed.ipynb" in err


# --------------------------------------------------------------------------- 6. chapters check their parameters
@pytest.mark.parametrize("kw, says", [
    ({"datasets": "mnist"}, "unknown data set 'mnist'"),
    ({"datasets": "CIFAR-10", "shots": [0]}, "shots: N must be"),
    ({"seeds": [-1]}, "seeds: a seed is a whole number"),
    ({"profile": "huge"}, "unknown profile"),
    ({"datasets": "cifar100", "teacher": "resnet56"}, "exists for cifar10"),
])
def test_chapter_parameters_are_checked_with_the_cli_messages(kw, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        check_parameters(**kw)


@pytest.mark.slow
def test_a_chapter_with_an_unknown_dataset_fails_on_the_name(tmp_path, data_root):
    from nbgraft import book

    with pytest.raises(book.ChapterFailed, match="unknown data set 'mnist'"):
        book.execute_chapter(REPO / "book" / "03_block_grafting.py", tmp_path / "03.ipynb",
                             {"dataset": "mnist", "profile": "tiny", "data_root": str(data_root),
                              "output_root": str(tmp_path), "device": "cpu"})
    assert not list(tmp_path.glob(".*partial*"))


# --------------------------------------------------------------------------- 7. two processes, one run
@pytest.mark.slow
def test_two_processes_asking_for_one_run_train_it_once(tiny_teacher, data_root, tmp_path):
    out = _copy(tiny_teacher, tmp_path)
    code = ("import json, sys; from nbgraft.experiments import run_baseline; "
            f"m = run_baseline('kd', 'cifar10', 2, 0, 'tiny', data_root={str(data_root)!r}, output_root={str(out)!r}, "
            "device='cpu', steps=400); print(json.dumps([m['cache_key'], m['wall_s']]))")
    env = {**os.environ, "NBGRAFT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    (key_a, wall_a), (key_b, wall_b) = (json.loads(o) for o, _ in results)
    assert key_a == key_b and wall_a == wall_b  # the second read the first one's result
    assert any("another process is computing" in e for _, e in results)
    assert len(list((out / "cache" / "kd").glob("*/metrics.json"))) == 1


# --------------------------------------------------------------------------- 8. a new user's gaps
def test_version_and_help_show_what_a_user_needs(capsys):
    with pytest.raises(SystemExit) as ex:
        cli_main(["--version"])
    assert ex.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["graft", "--help"])
    text = capsys.readouterr().out
    assert "(default: cpu)" in text and "$NBGRAFT_DATA or <repo>/data" in text and "$NBGRAFT_OUTPUTS" in text


def test_cache_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        e = Entry(tmp_path, "thing", {"a": 1})
        e.save_tensors("w.pt", {"x": torch.zeros(1)})
        e.finish({"ok": 1})
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.json", "w.pt"):
        assert e.path(name).stat().st_mode & 0o044 == 0o044, name


def test_baseline_with_unknown_kind_or_method(data_root, tmp_path):
    with pytest.raises(ValueError, match="unknown baseline 'distill'"):
        run_baseline("distill", "cifar10", 1, 0, "tiny", data_root=data_root, output_root=tmp_path)
