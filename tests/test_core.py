"""The core package: grafting identities, exact folding, the sampler, the cache, errors, one real run."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nbgraft import data as D
from nbgraft import grafting as G
from nbgraft.cache import BOOKKEEPING, Entry, cached, config_hash
from nbgraft.cli import main as cli_main
from nbgraft.evaluate import eval_batch, predict
from nbgraft.grafting import new_parts
from nbgraft.models import build, load_state
from nbgraft.models.vgg import student_spec, teacher_spec
from nbgraft.profiles import get_profile
from nbgraft.runs.teacher import get_teacher
from helpers import identity_map

REPO = Path(__file__).resolve().parents[1]


def test_grafting_the_teachers_own_blocks_reproduces_its_logits_exactly():
    torch.manual_seed(0)
    teacher = build(teacher_spec(10, width=0.125, batch_norm=True)).eval()
    x = torch.randn(8, 3, 32, 32)
    first = 3
    blocks = [copy.deepcopy(teacher.blocks[i]) for i in range(first, 6)]
    t2s = [identity_map(teacher.widths[i]) for i in range(first, 6)]
    s2t = [identity_map(teacher.widths[i + 1]) if i < 5 else nn.Identity() for i in range(first, 6)]
    parts = G.GraftParts(first, blocks, t2s, s2t, teacher.widths[first:]).eval()
    with torch.no_grad():
        want = teacher(x)
        for a in range(first, 6):
            for b in range(a, 6):
                got = G.Grafted(teacher, parts, a, b).eval()(x)
                assert torch.equal(got, want), (a, b)


def test_adapter_fold_is_exact():
    torch.manual_seed(0)
    a, b = G.ChannelMap(16, 32), G.ChannelMap(32, 16)
    for x in (torch.randn(4, 16, 5, 5), torch.randn(4, 16), torch.randn(4, 16, 7)):
        folded = G.fold(a, b)
        assert folded.weight.shape == (16, 16)
        torch.testing.assert_close(folded(x), b(a(x)), rtol=1e-5, atol=1e-5)
    conv = nn.Conv2d(16, 32, 1)
    with torch.no_grad():
        conv.weight.copy_(a.weight[:, :, None, None])
        conv.bias.copy_(a.bias)
    x = torch.randn(2, 16, 3, 3)
    torch.testing.assert_close(a(x), conv(x), rtol=1e-5, atol=1e-5)  # a channel map is a 1x1 conv
    assert isinstance(G.fold(nn.Identity(), nn.Identity()), nn.Identity)
    assert G.fold(nn.Identity(), b)(torch.randn(2, 32, 3, 3)).shape == torch.Size([2, 16, 3, 3])


def test_scores_do_not_depend_on_the_chunk_size():
    """Scoring runs in chunks (nbgraft.evaluate.eval_batch); each image's logits are its own."""
    torch.manual_seed(2)
    net = build(teacher_spec(10, width=0.125, batch_norm=True)).eval()
    x = torch.randn(300, 3, 32, 32)
    whole = predict(net, x, batch_size=300)
    tol = float(whole.abs().max()) * torch.finfo(torch.float32).eps * 64 * len(net)  # a few ulps per layer
    for bs in (None, 7, 128):
        torch.testing.assert_close(predict(net, x, batch_size=bs), whole, rtol=0, atol=tol)
    assert eval_batch("cpu") == eval_batch(torch.device("cpu")) >= 1


def test_exported_student_folded_equals_unfolded_and_is_smaller():
    torch.manual_seed(1)
    t_spec = teacher_spec(10, width=0.25, batch_norm=True)
    s_spec = student_spec(t_spec)
    teacher = build(t_spec).eval()
    parts = new_parts(teacher, s_spec, seed=0)
    assert parts.first == 3 and parts.positions == [3, 4, 5] and G.folds_adapters(parts)
    x = torch.randn(16, 3, 32, 32)
    folded = G.export_student(teacher, parts, folded=True)
    unfolded = G.export_student(teacher, parts, folded=False)
    with torch.no_grad():
        lf, lu = folded(x), unfolded(x)
        chain = G.Grafted(teacher, parts, 3, 5).eval()(x)
    torch.testing.assert_close(lf, lu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lu, chain, rtol=1e-5, atol=1e-5)
    assert torch.equal(lf.argmax(1), lu.argmax(1))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(folded) < n(unfolded) < n(teacher)
    # The folded student rebuilds from the two specs alone.
    again = G.export_student(build(t_spec, init=False), new_parts(build(t_spec, init=False), s_spec, seed=9))
    again.load_state_dict(folded.state_dict())


def _fake_data(n_per_class=30, classes=10) -> D.ImageData:
    y = np.repeat(np.arange(classes), n_per_class)
    x = np.random.default_rng(0).integers(0, 255, (len(y), 32, 32, 3), dtype=np.uint8)
    # The test split is absent on purpose: splitting must never read it.
    return D.ImageData("cifar10", x, y, None, None, source="test")


def test_sampler_is_deterministic_balanced_nested_and_disjoint_from_validation():
    data = _fake_data()
    s1 = D.make_split(data, val_per_class=5, shots=4, seed=3)
    s2 = D.make_split(data, val_per_class=5, shots=4, seed=3)
    assert np.array_equal(s1.few_shot, s2.few_shot) and np.array_equal(s1.val, s2.val)
    assert np.bincount(data.y_train[s1.few_shot]).tolist() == [4] * 10
    assert np.bincount(data.y_train[s1.val]).tolist() == [5] * 10
    assert not set(s1.few_shot) & set(s1.val)
    assert not set(s1.teacher_train) & set(s1.val)
    assert set(s1.few_shot) <= set(s1.teacher_train)
    other = D.make_split(data, val_per_class=5, shots=4, seed=4)
    assert not np.array_equal(other.few_shot, s1.few_shot)
    assert np.array_equal(other.val, s1.val)  # the validation pool does not move with the seed
    one = D.make_split(data, val_per_class=5, shots=1, seed=3)
    assert set(one.few_shot) <= set(s1.few_shot)


def test_splits_share_their_pools_only_between_equal_data():
    data, other = _fake_data(), _fake_data(n_per_class=40)
    data.fingerprint, other.fingerprint = "a", "b"
    first, again = D.make_split(data, 5, shots=2, seed=0), D.make_split(data, 5, shots=3, seed=1)
    assert first.val is again.val and not first.val.flags.writeable  # made once, read-only
    assert np.array_equal(first.val, D.validation_pool(data.y_train, 5))
    assert np.array_equal(first.teacher_train, np.setdiff1d(np.arange(len(data.y_train)), first.val))
    assert np.array_equal(D.make_split(other, 5).val, D.validation_pool(other.y_train, 5))


def test_bad_inputs_raise_clear_errors(tmp_path):
    data = _fake_data()
    with pytest.raises(ValueError, match="N=26 shots is more than class 0 has"):
        D.make_split(data, val_per_class=5, shots=26, seed=0)
    with pytest.raises(ValueError, match="N must be a whole number of at least 1"):
        D.make_split(data, val_per_class=5, shots=0, seed=0)
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*cifar10, cifar100"):
        D.load_dataset("mnist", tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset("cifar10", tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "cifar10.npz" in msg and "torchvision root" in msg and "internet" in msg and "unpack.py" in msg
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")
    with pytest.raises(ValueError, match="unknown grafting loss"):
        G.graft_loss(torch.zeros(2, 3), torch.zeros(2, 3), "l7")
    small = build(teacher_spec(10, width=0.125))
    big = build(teacher_spec(10, width=0.25))
    with pytest.raises(ValueError, match="does not fit this architecture.*shape mismatch"):
        load_state(small, big.state_dict(), "teacher checkpoint x.pt")


def test_cache_round_trip_and_atomic_writes(tmp_path):
    cfg = {"a": 1, "b": [1, 2], "c": {"d": 0.5}}
    assert config_hash(cfg) == config_hash({"c": {"d": 0.5}, "b": [1, 2], "a": 1})
    assert config_hash(cfg) != config_hash({**cfg, "a": 2})
    e = Entry(tmp_path, "thing", cfg)
    assert not e.done
    e.save_tensors("w.pt", {"x": torch.arange(3)})
    e.finish({"acc": 12.5})
    again = Entry(tmp_path, "thing", cfg)
    assert again.done and {k: v for k, v in again.metrics().items() if k not in BOOKKEEPING} == {"acc": 12.5}
    assert again.metrics()["files"] == {"w.pt": e.path("w.pt").stat().st_size}
    assert again.metrics()["cache_key"] == again.key
    assert torch.equal(again.load_tensors("w.pt")["x"], torch.arange(3))
    assert json.loads(again.path("config.json").read_text()) == cfg
    assert not [p for p in e.dir.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_a_cached_computation_runs_once_per_config(tmp_path):
    calls = []

    def compute(v):
        calls.append(v)
        return {"acc": v}

    assert cached("demo", {"v": 1}, lambda: compute(1), tmp_path)["acc"] == 1
    assert cached("demo", {"v": 1}, lambda: compute(99), tmp_path)["acc"] == 1  # read back, not run
    assert cached("demo", {"v": 2}, lambda: compute(2), tmp_path)["acc"] == 2
    assert calls == [1, 2]


def test_schedule_fields_added_later_leave_earlier_cache_keys_alone():
    book = get_profile("cpu").recipe("netgraft", "cifar10")
    # The keys of the book's cpu recipes as they were before `block_images` existed (chapters 5 and 6 re-read them).
    assert config_hash({"schedule": book}) == "687a2f8bb5f95fb4"
    assert config_hash({"schedule": get_profile("cpu").recipe("netgraft_paper", "cifar100")}) == "cef1f8bcb942f004"
    longer = replace(book, block_images=4000)
    assert config_hash({"schedule": longer}) != config_hash({"schedule": book})
    assert json.loads(json.dumps(Entry(None, "x", {"schedule": longer}).config))["schedule"]["block_images"] == 4000
    # The rule itself: at least block_epochs, and at least block_images images seen.
    assert [longer.block_epochs_at(0, n) for n in (10, 20, 40, 1000)] == [400, 200, 200, 200]
    assert book.block_epochs_at(0, 10) == book.block_epochs[0]
    assert replace(longer, block_epochs=(0,)).block_epochs_at(0, 10) == 0  # a skipped block stage stays skipped


def test_interrupted_teacher_training_resumes_to_the_same_weights(tmp_path, data_root, monkeypatch, capsys):
    from dataclasses import replace

    import nbgraft.runs.teacher as T
    from nbgraft.schedules import TeacherSchedule

    monkeypatch.setattr(T, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every epoch

    base = get_profile("tiny")
    prof = replace(base, teacher={d: TeacherSchedule(epochs=2, train_limit=1000) for d in base.teacher})
    full, _ = get_teacher("cifar10", prof, data_root=data_root, output_root=tmp_path / "a", device="cpu")

    calls = {"n": 0}
    real_report = T.report

    def crash_in_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_report(*a, **k)

    monkeypatch.setattr(T, "report", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        get_teacher("cifar10", prof, data_root=data_root, output_root=tmp_path / "b", device="cpu")
    monkeypatch.setattr(T, "report", real_report)
    resumed, metrics = get_teacher("cifar10", prof, data_root=data_root, output_root=tmp_path / "b", device="cpu")
    assert "at epoch 1/2" in capsys.readouterr().out  # it resumed, not started again
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for p, q in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q)


@pytest.mark.slow
def test_block_grafting_lowers_the_grafting_loss_on_real_cifar(data_root, tiny_outputs):
    from dataclasses import replace

    from nbgraft.runs.experiments import prepare

    s = prepare("cifar10", 5, 0, "tiny", data_root=data_root, output_root=tiny_outputs, device="cpu")
    assert s.teacher_metrics["test_accuracy"] > 20  # the tiny teacher learned something real
    sched = replace(get_profile("tiny").graft_for("cifar10", method="netgraft_paper"), block_epochs=(30,),
                    augment=False)
    parts = new_parts(s.teacher, student_spec(s.teacher.spec), seed=0)
    log = G.graft_blocks(s.teacher, parts, s.x, sched, shots=5)
    for name, curve in log.losses.items():
        assert len(curve) == 30
        assert curve[-1] < 0.7 * curve[0], (name, curve[0], curve[-1])


@pytest.mark.slow
def test_cli_runs_netgraft_and_baselines_and_prints_a_table(data_root, tiny_outputs, capsys):
    args = ["--profile", "tiny", "--data-root", str(data_root), "--output-root", str(tiny_outputs)]
    assert cli_main(["graft", "--shots", "2", "--baselines", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("N=2 seed=0") == 5  # NetGraft and the four baselines
    assert "cache/<method>/<key>" in out
    assert cli_main(["table", "--output-root", str(tiny_outputs)]) == 0
    table = capsys.readouterr().out
    for method in ("netgraft", "scratch", "kd", "kd_inherited", "scratch_inherited"):
        assert method in table
    assert cli_main(["graft", "--shots", "9999", *args]) == 2
    assert "N=9999 shots is more than" in capsys.readouterr().err


def test_untrained_controls_are_named_and_trained_ones_are_not():
    import pandas as pd

    from nbgraft.runs import report

    rows = [("cifar10", "vgg16", "kd", n, a) for n, a in ((1, 18.9), (5, 32.6), (10, 32.5))]  # trains: not named
    rows += [("cifar100", "vgg16", "kd", n, a) for n, a in ((1, 1.4), (5, 1.1), (10, 1.4))]  # chance
    rows += [("cifar100", "vgg16", "kd_inherited", n, a) for n, a in ((1, 17.1), (5, 13.9), (10, 13.4))]  # falls
    rows += [("cifar100", "vgg16", "netgraft", n, 1.0) for n in (1, 5, 10)]  # not a control
    rows += [("cifar10", "resnet56", "scratch_inherited", n, 10.0) for n in (1, 5, 10)]  # chance, its own rates
    f = pd.DataFrame(rows, columns=["dataset", "teacher", "method", "shots", "accuracy_mean"])
    lines = report.untrained_controls(f)
    assert len(lines) == 3
    assert "chance 1%" in lines[0] and "reused here untuned" in lines[0]
    assert "lower with more images" in lines[1] and "13.40" in lines[1]
    assert "resnet56" in lines[2] and "probed for this teacher" in lines[2] and "untuned" not in lines[2]
    tuned = report.untrained_controls(f, {("kd", "vgg16", "cifar100"): "highest rate, longest"})
    assert "own validation pool" in tuned[0] and "highest rate, longest edge" in tuned[0]
    assert "untuned" not in tuned[0] and "not a tuned comparison" not in tuned[0] and tuned[1:] == lines[1:]


def test_tuned_recipes_are_the_grid_choices_the_profile_holds(tmp_path):
    """A control counts as tuned on a setting only where the profile runs what its grid chose there."""
    import pandas as pd

    from nbgraft.profiles import get_profile
    from nbgraft.runs import tuning as T

    assert T.tuned_recipes("tiny", tmp_path) == {}
    lr = get_profile("tiny").recipe("kd", "cifar10", "vgg16").lr
    rows = [{"method": m, "teacher": "vgg16", "dataset": "cifar10", "shots": n, "seed": 0, "lr_scale": scale,
             "length": length, "lr_value": lr * scale, "length_value": f"{round(20 * length)} steps",
             "val_accuracy": acc(scale, length), "wall_s": 1.0}
            for m, acc in (("kd", lambda s_, l_: 60.0 + 10 * l_ - abs(s_ - 1)),  # wins at x1 on the longest length
                           ("scratch", lambda s_, l_: 60.0 + 10 * (s_ == 3)))  # wins at x3: not what tiny holds
            for scale in (1 / 3, 1.0, 3.0) for length in (0.5, 1.0, 2.0) for n in (1, 10)]
    rows = [r for r in rows if not (r["method"] == "kd" and r["length"] == 2.0)]  # x1 at 1.0: the recipe itself
    (tmp_path / "tables").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "tables" / "tuning_tiny.csv", index=False)
    assert T.tuned_recipes("tiny", tmp_path) == {("kd", "vgg16", "cifar10"): "longest"}


@pytest.mark.slow
def test_runs_of_one_teacher_share_its_validation_and_test_tensors(data_root, tiny_outputs):
    from nbgraft.runs.experiments import prepare

    a = prepare("cifar10", 2, 0, "tiny", data_root=data_root, output_root=tiny_outputs, device="cpu")
    b = prepare("cifar10", 3, 1, "tiny", data_root=data_root, output_root=tiny_outputs, device="cpu",
                source="noise")
    assert a.x_test is b.x_test and a.x_val is b.x_val  # made once, not once per run
    assert not torch.equal(a.x[:10], b.x[:10])
    assert torch.equal(a.teacher_val_pred, predict(a.teacher, a.x_val).argmax(1))
    assert len(a.teacher_test_pred) == len(a.y_test) == len(b.y_test)


def test_the_committed_runs_keep_their_cache_keys(data_root):
    """Every run of the committed sweep table (chapter 6: both recipes, the ablation variants and the
    baselines, CIFAR-10 and CIFAR-100) maps to the cache key it was stored under: a refactoring that changed
    what enters a key would orphan every cached run (and the book's cached re-run)."""
    import pandas as pd

    from nbgraft.runs.experiments import run_entry
    from nbgraft.runs.sweep import variant

    table = pd.read_csv(REPO / "outputs" / "tables" / "06_sweep.csv", dtype={"cache_key": str})
    assert len(table) > 100 and table.cache_key.str.len().eq(16).all()
    for row in table.itertuples():
        recipe, overrides, student = variant(row.method)
        entry = run_entry(recipe, row.dataset, row.shots, row.seed, row.profile, teacher=row.teacher,
                          student=student, data_root=data_root, **overrides)
        assert entry.key == row.cache_key, row


def test_the_package_has_no_import_cycle_and_names_its_layers():
    """Module-level imports between nbgraft's modules form no cycle; at most 12 modules at the top level; every
    subpackage says what lives there; the README's API is importable from nbgraft itself."""
    import ast

    import nbgraft

    pkg = REPO / "nbgraft"
    mods = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in pkg.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom) and node.level:
                parent = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
                target = f"{parent}.{node.module}" if node.module else parent
                for alias in node.names:
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in mods else target)
        graph[name] = {d for d in deps if d in mods and d != name}
    state = {}

    def visit(n, path):
        state[n] = "open"
        for d in graph[n]:
            assert state.get(d) != "open", f"import cycle: {' -> '.join([*path, d])}"
            if d not in state:
                visit(d, [*path, d])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])
    top = [p.name for p in pkg.glob("*.py")]
    assert len(top) <= 12, top
    for sub in (p for p in pkg.iterdir() if (p / "__init__.py").is_file()):
        assert ast.get_docstring(ast.parse((sub / "__init__.py").read_text())), sub
    assert {"BlockNet", "GraftParts", "GraftSchedule", "netgraft"} <= set(nbgraft.__all__)
    assert nbgraft.GraftParts.__name__ == "GraftParts" and callable(nbgraft.netgraft)


def test_every_model_family_provides_the_protocol():
    from nbgraft.models import FAMILIES, ModelFamily, family

    for name in FAMILIES:
        assert isinstance(family(name), ModelFamily), name
