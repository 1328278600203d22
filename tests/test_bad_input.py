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
from nbgraft.cache import RUN_METRICS, DamagedEntry, Entry, atomic_write_json
from nbgraft.cli import main as cli_main
from nbgraft.runs.experiments import cached_runs, check_parameters, run_student
from nbgraft.runs.teacher import get_teacher, teacher_entry, teacher_test_predictions

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
    before = teacher_entry("cifar10", "tiny", data_root=tmp_path / "a", output_root=None).key
    arrays = _good_arrays()
    arrays["x_train"][0, 0, 0, 0] ^= 1  # one pixel
    _write(tmp_path / "a", **arrays)
    after = teacher_entry("cifar10", "tiny", data_root=tmp_path / "a", output_root=None).key
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
        e = Entry(tmp_path, "netgraft", {"k": text}, metrics=RUN_METRICS)
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
    shutil.rmtree(teacher_entry("cifar10", "tiny", data_root=data_root, output_root=out).dir)
    again, m2 = get_teacher("cifar10", "tiny", **kw)  # trained again: a new entry, not the one in memory
    assert again is not first and m2["test_accuracy"] == pytest.approx(m["test_accuracy"])


def _copy(root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(root, dest)
    return dest


@pytest.mark.parametrize("name", ["model.pt", "test_pred.pt"])
def test_a_damaged_teacher_file_is_recomputed(tiny_teacher, data_root, tmp_path, capsys, name):
    out = _copy(tiny_teacher, tmp_path)
    e = teacher_entry("cifar10", "tiny", data_root=data_root, output_root=out)
    good = e.metrics()["test_accuracy"]
    e.path(name).write_bytes(e.path(name).read_bytes()[:100])
    _, m = get_teacher("cifar10", "tiny", data_root=data_root, output_root=out, device="cpu")
    assert "moved the entry to" in capsys.readouterr().err and m["test_accuracy"] == pytest.approx(good)
    assert teacher_test_predictions("cifar10", "tiny", data_root=data_root, output_root=out).shape == (500,)


def test_garbage_test_predictions_are_recovered(tiny_teacher, data_root, tmp_path):
    out = _copy(tiny_teacher, tmp_path)
    e = teacher_entry("cifar10", "tiny", data_root=data_root, output_root=out)
    e.path("test_pred.pt").write_bytes(b"garbage")
    assert teacher_test_predictions("cifar10", "tiny", data_root=data_root, output_root=out).shape == (500,)


def test_a_garbage_resume_checkpoint_restarts_training(data_root, tmp_path, capsys):
    e = teacher_entry("cifar10", "tiny", data_root=data_root, output_root=tmp_path)
    e.start()
    e.path("resume.pt").write_bytes(b"\x80garbage")
    _, m = get_teacher("cifar10", "tiny", data_root=data_root, output_root=tmp_path, device="cpu")
    assert "training the teacher from its first epoch" in capsys.readouterr().err and len(m["history"]) == 1


def test_table_skips_and_names_unreadable_entries(tmp_path, capsys):
    good = {"method": "kd", "dataset": "cifar10", "test_accuracy": 12.0, "test_agreement": 13.0,
            "val_accuracy": 11.0, "wall_s": 1.0}
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
    code = ("import json, sys; from nbgraft.runs.experiments import run_student; "
            f"m = run_student('kd', 'cifar10', 2, 0, 'tiny', data_root={str(data_root)!r}, output_root={str(out)!r}, "
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
        run_student("distill", "cifar10", 1, 0, "tiny", data_root=data_root, output_root=tmp_path)


# --------------------------------------------------------------------------- 9. reliability, second round (issue 27)
def _damaged(root: Path) -> list[Path]:
    return sorted(root.rglob("*.damaged-*"))


def _stamps(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_cpu_with_an_index_reads_the_cached_teacher(tiny_teacher, data_root, tmp_path, capsys):
    """`--device cpu:0` once took the cached teacher for damage and retrained it in an endless loop."""
    out = _copy(tiny_teacher, tmp_path)
    before = _stamps(out)
    for device in ("cpu:0", "cpu:1", "cpu"):
        code, err = _cli(["teacher", "--profile", "tiny", "--device", device, "--data-root", str(data_root),
                          "--output-root", str(out)], capsys)
        assert code == 0 and "moved the entry" not in err, (device, err)
    assert _damaged(out) == [] and {k: v for k, v in _stamps(out).items() if ".lock" not in k} == \
        {k: v for k, v in before.items() if ".lock" not in k}


def test_a_device_that_cannot_take_the_checkpoint_is_no_damage(tiny_teacher, data_root, tmp_path, capsys,
                                                               monkeypatch):
    """Out of memory (or any device error) while loading a good teacher: one line saying what to change, and
    the entry stays where it is."""
    import nbgraft.cache as C
    import nbgraft.runs.teacher as T

    out = _copy(tiny_teacher, tmp_path)
    T._LOADED.clear()

    def no_room(obj, device):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(C, "to_device", no_room)
    code, err = _cli(["teacher", "--profile", "tiny", "--device", "cpu", "--data-root", str(data_root),
                      "--output-root", str(out)], capsys)
    assert code == 0  # cpu loads need no move
    monkeypatch.setattr(C.Entry, "load_tensors",
                        lambda self, name, map_location="cpu": no_room(None, map_location))
    T._LOADED.clear()
    code, err = _cli(["teacher", "--profile", "tiny", "--device", "cpu", "--data-root", str(data_root),
                      "--output-root", str(out)], capsys)
    assert code == 2 and err.startswith("nbgraft: error: the GPU ran out of memory") and err.count("\n") == 1
    assert "fewer seeds" in err and "--device cpu" in err
    assert _damaged(out) == []


@pytest.mark.parametrize("device", ["xpu", "meta", "cuda:7", "tpu"])
def test_devices_nbgraft_cannot_use_are_one_line(data_root, tmp_path, capsys, device):
    code, err = _cli(["teacher", "--profile", "tiny", "--device", device, "--data-root", str(data_root),
                      "--output-root", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("nbgraft: error:") and err.count("\n") == 1 and repr(device) in err
    assert _cache_files(tmp_path) == []


def test_a_teacher_damaged_again_after_recomputing_is_an_error_not_a_loop(data_root, tmp_path, monkeypatch):
    import nbgraft.cache as C
    import nbgraft.runs.teacher as T

    real = C.Entry.load_tensors

    def model_always_damaged(self, name, map_location="cpu"):
        if name == "model.pt":
            raise C.DamagedEntry(f"{self.path(name)} cannot be read (simulated)")
        return real(self, name, map_location)

    monkeypatch.setattr(C.Entry, "load_tensors", model_always_damaged)
    T._LOADED.clear()
    with pytest.raises(C.DamagedEntry, match="even after computing the teacher again"):
        get_teacher("cifar10", "tiny", data_root=data_root, output_root=tmp_path, device="cpu")
    assert len(_damaged(tmp_path)) == 2  # the first one, and the recomputed one: kept, and no third try


def test_data_replaced_with_the_same_size_and_mtime_is_hashed_again(tmp_path):
    npz = _write(tmp_path / "d")
    first = D.load_dataset("cifar10", npz.parent, download=False).fingerprint
    st = npz.stat()
    arrays = _good_arrays()
    arrays["y_train"] = (arrays["y_train"] + 1) % 10  # relabelled: same shapes, same file size
    tmp = tmp_path / "new.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert npz.stat().st_size == st.st_size and npz.stat().st_mtime_ns == st.st_mtime_ns
    D._LOADED.clear()
    again = D.load_dataset("cifar10", npz.parent, download=False)
    assert again.fingerprint != first and again.fingerprint == D.array_fingerprint(again)
    assert (again.y_train == arrays["y_train"]).all()


def test_labels_missing_classes_are_refused(tmp_path, capsys):
    npz = _write(tmp_path / "data", y_train=np.zeros(200, dtype=np.int64))
    out = tmp_path / "out"
    code, err = _cli(["teacher", "--data-root", str(npz.parent), "--output-root", str(out), *TINY], capsys)
    assert code == 2 and "y_train has no image of class(es) [1, 2, 3" in err and str(npz) in err
    assert err.count("\n") == 1 and _cache_files(out) == []


def test_npz_members_that_are_not_arrays(tmp_path, capsys):
    import zipfile

    (tmp_path / "data").mkdir()
    with zipfile.ZipFile(tmp_path / "data" / "cifar10.npz", "w") as z:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(k, b"raw bytes, not .npy")
    D._LOADED.clear()
    code, err = _cli(["teacher", "--data-root", str(tmp_path / "data"), "--output-root", str(tmp_path / "o"), *TINY],
                     capsys)
    assert code == 2 and "are not .npy arrays" in err and "cifar10.npz" in err and err.count("\n") == 1


def test_a_folder_named_like_the_arrays_is_called_a_folder(tmp_path, capsys):
    (tmp_path / "data" / "cifar10.npz").mkdir(parents=True)
    D._LOADED.clear()
    with pytest.raises(FileNotFoundError, match=r"cifar10.npz \(a folder, not a file\)"):
        D.load_dataset("cifar10", tmp_path / "data", download=False)


def test_a_failed_lookup_leaves_no_folder_behind(tmp_path, monkeypatch):
    def failing_download(name, root, download, source):  # what torchvision does offline: mkdir, then fail
        Path(root).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("no network")

    monkeypatch.setattr(D, "_from_torchvision", failing_download)
    D._LOADED.clear()
    missing = tmp_path / "nowhere" / "data"
    with pytest.raises(FileNotFoundError, match="no network"):
        D.load_dataset("cifar10", missing)
    assert not missing.exists()


def test_unreadable_data_says_permission_not_rebuild(tmp_path, capsys, monkeypatch):
    npz = _write(tmp_path / "data")

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "load", denied)
    D._LOADED.clear()
    code, err = _cli(["teacher", "--data-root", str(npz.parent), "--output-root", str(tmp_path / "o"), *TINY], capsys)
    assert code == 2 and "permission denied" in err and "chmod a+r" in err and "rebuild" not in err


def test_unreadable_metrics_are_not_damage(tmp_path, monkeypatch):
    e = Entry(tmp_path, "kd", {"k": 1}, metrics=RUN_METRICS)
    e.finish({"test_accuracy": 1.0, "test_agreement": 1.0, "val_accuracy": 1.0, "wall_s": 1.0})

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(PermissionError):
        e.done
    monkeypatch.undo()
    assert e.done and _damaged(tmp_path) == []


@pytest.mark.parametrize("metrics, says", [
    ({"test_accuracy": 99.9}, "is not a finished run: it lacks"),
    ({"test_accuracy": "high", "test_agreement": 1, "val_accuracy": 1, "wall_s": 1}, "should be numbers"),
    ({"test_accuracy": float("nan"), "test_agreement": 1, "val_accuracy": 1, "wall_s": 1}, "should be numbers"),
    ({"test_accuracy": 1, "test_agreement": 1, "val_accuracy": 1, "wall_s": 1, "cache_key": "0123"}, "belongs to"),
])
def test_json_that_is_not_a_finished_run_is_moved_aside(tmp_path, capsys, metrics, says):
    e = Entry(tmp_path, "netgraft", {"k": 1}, metrics=RUN_METRICS)
    e.start()
    atomic_write_json(e.path("metrics.json"), metrics)
    assert not e.done
    assert says in capsys.readouterr().err and len(_damaged(tmp_path)) == 1
    e.start()
    atomic_write_json(e.path("metrics.json"), metrics)
    assert cached_runs("netgraft", tmp_path) == []  # the table skips it, naming it
    assert says in capsys.readouterr().err


@pytest.mark.slow
def test_damaged_checkpoints_of_cached_runs_are_noticed_and_computed_once(tiny_teacher, data_root, tmp_path, capsys):
    """A cached run whose checkpoint is missing, truncated or whose metrics are not a run: moved aside and trained
    again (the same numbers), reported as 'now'; loading its student names the file and the fix."""
    from nbgraft.runs.experiments import load_student, run_netgraft

    out = _copy(tiny_teacher, tmp_path)
    common = ["--profile", "tiny", "--device", "cpu", "--data-root", str(data_root), "--output-root", str(out),
              "--shots", "1", "--method", "netgraft"]
    code = cli_main(["graft", *common])
    first = capsys.readouterr()
    assert code == 0
    kw = {"data_root": data_root, "output_root": out, "device": "cpu"}
    good = run_netgraft("cifar10", 1, 0, "tiny", **kw)
    entry = Entry.stored(out, "netgraft", good["cache_key"])
    assert set(good["files"]) == {"parts.pt", "student.pt"}
    code = cli_main(["graft", *common])
    assert code == 0 and "(from the cache:" in capsys.readouterr().out
    damages = [lambda: entry.path("student.pt").unlink(),
               lambda: entry.path("parts.pt").write_bytes(entry.path("parts.pt").read_bytes()[:-50]),
               lambda: atomic_write_json(entry.path("metrics.json"), {"test_accuracy": 99.9})]
    for n, damage in enumerate(damages, start=1):
        damage()
        code = cli_main(["graft", *common])
        text = capsys.readouterr()
        assert code == 0 and "(now:" in text.out and "moved the entry to" in text.err
        assert len(_damaged(out / "cache" / "netgraft")) == n
        again = run_netgraft("cifar10", 1, 0, "tiny", **kw)
        assert again["test_accuracy"] == good["test_accuracy"]  # the same run, computed again on the same machine
    entry.path("student.pt").write_bytes(b"garbage")
    with pytest.raises(DamagedEntry, match="run the chapter"):
        load_student(again, out)
    assert not entry.dir.exists()  # moved aside: asking for the run trains it anew
    assert "(now:" in first.out


def test_table_on_a_missing_root_is_one_line(tmp_path, capsys):
    code = cli_main(["table", "--output-root", str(tmp_path / "nothing")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and captured.err.startswith("nbgraft: error: no cache under")
    assert str(tmp_path / "nothing") in captured.err and captured.err.count("\n") == 1


def test_the_published_teacher_message_names_what_a_user_can_set(tmp_path):
    from nbgraft.models import resnet as R

    with pytest.raises(FileNotFoundError, match="NBGRAFT_TEACHERS") as err:
        R.load_published("resnet56", tmp_path / "resnet56-4bfd9763.th")
    assert "teachers_root=" not in str(err.value)
