"""The field's few-shot compression methods (nbgraft.methods: pruned_kd, fskd, mir) on the book's student, the
grid that grows past its edges, and the paired methods table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from nbgraft.grafting import GraftParts, export_student, new_parts
from nbgraft.grafting.parts import start_parts
from nbgraft.methods import METHODS
from nbgraft.methods.mir import mir_student
from nbgraft.methods.pruned import pruned_student
from nbgraft.models import build
from nbgraft.models import resnet as R
from nbgraft.models import vgg as V
from nbgraft.models.inherit import LeastSquares, fit_exit
from nbgraft.runs.compare import methods_table, paired_difference, verdict
from nbgraft.runs.tuning import _extend, choices, on_edge
from nbgraft.schedules import BaselineSchedule, FitSchedule
from helpers import randomise_bn


def _teacher(spec, seed: int = 0):
    """A random network with BatchNorm away from its defaults (so folding it is tested), frozen."""
    torch.manual_seed(seed)
    return randomise_bn(build(spec), seed).requires_grad_(False)


VGG = V.teacher_spec(10, width=0.125, batch_norm=True)
RESNET = R.teacher_spec(20, 10)


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Equal up to float32 rounding of the logits' own scale (the two sides sum in another order)."""
    tol = 1e-4 * b.abs().max().item() + 1e-6
    assert (a - b).abs().max().item() <= tol, what


@pytest.mark.parametrize("spec", [VGG, RESNET], ids=["vgg", "resnet"])
def test_a_student_keeping_every_channel_starts_as_its_teacher_for_every_field_method(spec):
    """pruned_kd and mir start from the pruned student; with nothing pruned it is the teacher, and so is MiR's
    (its body, then the teacher's classifier); FSKD's fit then has nothing to correct."""
    teacher = _teacher(spec)
    fam = V if spec is VGG else R
    full = fam.student_spec(spec, widths=spec.widths) if spec is VGG else fam.student_spec(spec, mids=spec.widths)
    x = torch.randn(24, 3, 32, 32)
    ref = teacher(x)
    model, parts = pruned_student(teacher, full, x, seed=0)
    _close(model(x), ref, "pruned student")
    # MiR needs own blocks before the classifier: the last three positions, at the teacher's widths
    first = len(teacher) - 3
    build_one = V.build_block if spec is VGG else R.build_unit
    blocks = [build_one(full, i) for i in range(first, len(teacher))]
    tail = start_parts(teacher, GraftParts.around(teacher.widths, first, blocks, teacher.widths[first:]), "teacher", x)
    _close(mir_student(teacher, tail)(x), ref, "MiR's student")
    fitted, log = METHODS["fskd"].train(teacher, full, x, torch.zeros(24, dtype=torch.long), FitSchedule(copies=1), 0)
    _close(fitted(x), ref, "FSKD's student")
    assert all(e < 1e-6 for e in log["relative_fit_error"])


@pytest.mark.parametrize("spec", [VGG, RESNET], ids=["vgg", "resnet"])
def test_fskd_fits_the_books_own_student_closer_to_its_teacher(spec):
    """FSKD's student has exactly the architecture NetGraft exports (same tensors, same shapes), fits the
    teacher's activations at every thin block at least as well as the pruned start, and fits maps in both
    kinds of student (the VGG's exits, the ResNet's branch ends)."""
    teacher = _teacher(spec)
    s_spec = (V if spec is VGG else R).student_spec(spec)
    x = torch.randn(40, 3, 32, 32)
    fitted, log = METHODS["fskd"].train(teacher, s_spec, x, torch.zeros(40, dtype=torch.long),
                                        FitSchedule(copies=1, ridge=1e-6, augment=False), 0)
    book = export_student(teacher, new_parts(teacher, s_spec, 0, init="teacher", x=x))
    assert {k: v.shape for k, v in fitted.state_dict().items()} == {k: v.shape for k, v in book.state_dict().items()}
    assert log["maps_fitted"] > 0
    first = log["first_trained_block"]
    t_acts, f_acts, b_acts = teacher.boundaries(x), fitted.boundaries(x), book.boundaries(x)

    def err(acts, i):  # both students are compared where their width is the teacher's: the logits
        return (acts[i] - t_acts[i]).pow(2).sum().item()

    assert err(f_acts, len(teacher)) < err(b_acts, len(teacher))
    assert first == (3 if spec is VGG else len(teacher) - 4)


def test_mir_trains_the_body_and_keeps_the_teachers_classifier():
    teacher = _teacher(VGG)
    x, y = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    model, log = METHODS["mir"].train(teacher, V.student_spec(VGG), x, y, BaselineSchedule(steps=4, batch_size=8), 0)
    for a, b in zip(model.blocks[-1].state_dict().values(), teacher.blocks[-1].state_dict().values()):
        assert torch.equal(a, b)
    for i in range(log["first_trained_block"]):
        for a, b in zip(model.blocks[i].state_dict().values(), teacher.blocks[i].state_dict().values()):
            assert torch.equal(a, b)
    start = mir_student(teacher, pruned_student(teacher, V.student_spec(VGG), x, 0)[1])
    moved = [not torch.equal(a, b) for a, b in zip(model.blocks[3:-1].parameters(), start.blocks[3:-1].parameters())]
    assert any(moved) and all(math.isfinite(v) for v in log["loss_curve"])


def test_least_squares_fed_in_chunks_is_the_one_fit():
    torch.manual_seed(1)
    s, t = torch.randn(30, 6, 4, 4), torch.randn(30, 9, 4, 4)
    fit = LeastSquares()
    for a, b in zip(s.split(7), t.split(7)):
        fit.add(a, b)
    w, b = fit.solve(1e-3)
    w1, b1 = fit_exit(s, t, 1e-3)
    assert torch.allclose(w, w1, atol=1e-10) and torch.allclose(b, b1, atol=1e-10)


def _grid(win_lr: float, win_length: float, lrs=(1 / 3, 1.0, 3.0), lengths=(0.5, 1.0, 2.0)) -> pd.DataFrame:
    rows = [{"method": "m", "shots": n, "lr_scale": round(lr, 4), "length": ln,
             "val_accuracy": 90.0 if (lr, ln) == (win_lr, win_length) else 50.0 + ln}
            for lr in lrs for ln in lengths for n in (1, 10)]
    return choices(pd.DataFrame(rows))


@pytest.mark.parametrize("win, grown", [
    ((1.0, 1.0), None),
    ((3.0, 1.0), ([1 / 3, 1.0, 3.0, 9.0], [0.5, 1.0, 2.0])),
    ((1 / 3, 2.0), ([1 / 9, 1 / 3, 1.0, 3.0], [0.5, 1.0, 2.0, 4.0])),
    ((1.0, 0.5), ([1 / 3, 1.0, 3.0], [0.25, 0.5, 1.0, 2.0])),
])
def test_the_tuning_grid_grows_past_the_edge_its_choice_lies_on(win, grown):
    lrs, lengths = [1 / 3, 1.0, 3.0], [0.5, 1.0, 2.0]
    assert _extend(lrs, lengths, _grid(*win), "m") == (grown is not None)
    if grown:
        assert lrs == pytest.approx(grown[0]) and lengths == grown[1]
    lengths = [0.25, 0.5, 1.0]  # never shorter than a quarter of the recipe
    assert not _extend([1 / 3, 1.0, 3.0], lengths, _grid(1.0, 0.25, lengths=lengths), "m")


def test_a_half_run_grid_point_neither_wins_nor_hides_the_edge_its_winner_lies_on():
    """An interrupted round left one longer point run at N=1 only: it cannot win on half its N, and the winner
    is still on the longest edge of the lengths tried at its own rate."""
    grid = _grid(3.0, 2.0)
    rows = pd.concat([grid.drop(columns=["val_accuracy_mean_over_n", "chosen"]),
                      pd.DataFrame([{"method": "m", "shots": 1, "lr_scale": 0.3333, "length": 4.0,
                                     "val_accuracy": 99.0}])], ignore_index=True)
    table = choices(rows)
    win = table[table.chosen].iloc[0]
    assert (win.lr_scale, win.length) == (3.0, 2.0)
    assert on_edge(table).edges.item() == "highest rate, longest"


def test_the_methods_table_pairs_each_method_with_netgraft_on_the_same_seeds():
    acc = {"netgraft": [80.0, 82.0, 84.0], "fskd": [70.0, 73.0, 73.0]}
    runs = pd.DataFrame([{"dataset": "cifar10", "teacher_name": "vgg16", "method": m, "shots": 1, "seed": s,
                          "test_accuracy": a, "teacher_test_accuracy": 88.0, "wall_s": 2.0}
                         for m, accs in acc.items() for s, a in enumerate(accs)]
                        + [{"dataset": "cifar10", "teacher_name": "vgg16", "method": "fskd", "shots": 1, "seed": 3,
                            "test_accuracy": 0.0, "teacher_test_accuracy": 88.0, "wall_s": 2.0}])  # no partner
    table = methods_table(runs).set_index("method")
    d = pd.Series([-10.0, -9.0, -11.0])  # fskd - netgraft on seeds 0-2
    half = 4.303 * d.std(ddof=1) / 3 ** 0.5
    assert table.loc["fskd", "diff_vs_netgraft"] == pytest.approx(-10.0)
    assert table.loc["fskd", ["ci95_low", "ci95_high"]].tolist() == pytest.approx([-10 - half, -10 + half])
    assert math.isnan(table.loc["netgraft", "diff_vs_netgraft"]) and table.loc["fskd", "seeds"] == 4
    assert paired_difference(pd.Series([1.0]), pd.Series([0.0]))["resolved"] is False


@pytest.mark.parametrize("interval, expected", [
    ((1.0, 0.6, 1.4), "better"), ((-1.0, -1.4, -0.6), "worse"), ((0.1, -0.3, 0.4), "equivalent"),
    ((0.3, 0.1, 0.5), "equivalent"),  # resolved, but smaller than the margin throughout
    ((0.4, 0.1, 0.7), "not settled"), ((0.2, -0.9, 1.3), "not settled"), ((2.0, math.nan, math.nan), "not settled"),
])
def test_a_difference_is_called_only_when_resolved_and_larger_than_the_margin(interval, expected):
    assert verdict(*interval, margin=0.5) == expected


def test_the_methods_grid_holds_every_row_the_methods_table_promises():
    from nbgraft.runs import sweep as S

    runs = S.get_grid("methods").runs()
    cells = {(r.teacher, r.dataset, r.shots, r.method) for r in runs}
    promised = {("vgg16", "cifar10", n) for n in (1, 5, 10)} | {("vgg16", "cifar100", n) for n in (1, 10)} \
        | {("resnet56", "cifar10", n) for n in (1, 10)}
    methods = {"netgraft", "netgraft_paper", "kd_inherited", "pruned_kd", "fskd", "mir"}
    assert cells == {(*p, m) for p in promised for m in methods}
    assert all(len({r.seed for r in runs if (r.teacher, r.dataset, r.shots, r.method) == c}) >= 3 for c in cells)
    assert S.get_grid("methods").restrict(shots=[1]).runs() == [r for r in runs if r.shots == 1]


def test_an_interrupted_tuning_keeps_the_rows_of_every_method_it_did_not_reach(tmp_path, monkeypatch):
    """A method's earlier rows give way to its new ones only once it has some: stopping `nbgraft tune` halfway
    through its methods leaves the others' rows in the table (their runs are cached, but the table is the record)."""
    from nbgraft.runs import tuning as T

    (tmp_path / "tables").mkdir()
    before = pd.DataFrame([{"method": m, "teacher": "vgg16", "dataset": "cifar10", "shots": 1, "seed": 0,
                            "lr_scale": 1.0, "length": 1.0, "lr_value": 0.1, "length_value": "600 steps",
                            "val_accuracy": 60.0, "wall_s": 1.0} for m in ("kd", "scratch")])
    before.to_csv(tmp_path / "tables" / "tuning_tiny.csv", index=False)

    def fake_run(method, *args, **kw):
        if method == "scratch":
            raise KeyboardInterrupt
        return {"val_accuracy": 70.0, "wall_s": 1.0}

    monkeypatch.setattr(T, "run_method", fake_run)
    with pytest.raises(KeyboardInterrupt):
        T.run_tuning(["kd", "scratch"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    table = pd.read_csv(tmp_path / "tables" / "tuning_tiny.csv")
    assert set(table[table.method == "kd"].val_accuracy) == {70.0} and (table.method == "kd").sum() == 18
    assert list(table[table.method == "scratch"].val_accuracy) == [60.0]


@pytest.mark.parametrize("extensions, lengths", [(0, {0.5, 1.0, 2.0}), (1, {0.5, 1.0, 2.0, 4.0}),
                                                  (None, {0.5, 1.0, 2.0, 4.0, 8.0, 16.0})])
def test_the_tuning_grid_grows_as_many_rounds_as_asked(tmp_path, monkeypatch, extensions, lengths):
    """A method whose accuracy keeps rising with length sits on the longest edge after every round: the grid grows
    `extensions` rounds (MAX_EXTENSIONS by default), and no more."""
    from nbgraft.runs import tuning as T

    def fake_run(method, dataset, shots, seed, profile, **over):
        # the tiny recipe's 20 steps at its own rate are best among the rates; longer is always better
        return {"val_accuracy": 50.0 + over.get("steps", 20) - 5.0 * ("lr" in over), "wall_s": 1.0}

    monkeypatch.setattr(T, "run_method", fake_run)
    table = T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extensions=extensions)
    assert set(table.length) == lengths and set(table.lr_scale) == {0.3333, 1.0, 3.0}
    edge = T.on_edge(table)
    assert edge.edges.item() == "longest"
    # 20 L steps at the longest length L against 10 L at half of it: the last doubling gained 10 L points
    assert edge.last_doubling_gain.item() == pytest.approx(10 * max(lengths))
    with pytest.raises(ValueError, match="0 or more"):
        T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extensions=-1)


def test_a_tuning_resumes_from_its_table_where_the_cache_is_gone(tmp_path, monkeypatch):
    """The table is the record: a grid point it lists for the same recipe is read back, not run again (a fresh
    checkout has the table but no cache); a row of another recipe (its fingerprint differs) is run afresh."""
    from nbgraft.runs import tuning as T

    calls = []

    def fake_run(method, dataset, shots, seed, profile, **over):
        calls.append((shots, over.get("lr"), over.get("steps")))
        return {"val_accuracy": 40.0 + shots, "wall_s": 2.0}

    monkeypatch.setattr(T, "run_method", fake_run)
    first = T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    assert len(calls) == 18 and first.recipe.nunique() == 9  # one fingerprint per grid point
    # each profile tunes into its own table: the CPU book's `tuning.csv` is never touched by another profile
    assert T.table_for("cpu") == "tuning" and not (tmp_path / "tables" / "tuning.csv").exists()
    table = pd.read_csv(tmp_path / "tables" / "tuning_tiny.csv")
    table.loc[(table.lr_scale == 1) & (table.length == 1) & (table.shots == 10), "val_accuracy"] = 77.0
    other = (table.lr_scale == 3) & (table.length == 2) & (table.shots == 1)
    table.loc[other, "recipe"] = "another recipe"
    table.to_csv(tmp_path / "tables" / "tuning_tiny.csv", index=False)

    calls.clear()
    again = T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    assert calls == [(1, pytest.approx(3 * T.profile_point("tiny", "kd", "cifar10", "vgg16")["lr_value"]), 40)]
    kept = again[(again.lr_scale == 1) & (again.length == 1) & (again.shots == 10)]
    assert kept.val_accuracy.item() == 77.0 and len(again) == 18
    # rows written before the table kept fingerprints match on rate and length alone
    table = pd.read_csv(tmp_path / "tables" / "tuning_tiny.csv").drop(columns=["recipe"])
    table.to_csv(tmp_path / "tables" / "tuning_tiny.csv", index=False)
    calls.clear()
    T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    assert calls == []


def test_behind_names_every_grid_choice_the_profile_does_not_hold(tmp_path, monkeypatch):
    """A grid that chose twice the profile's steps is reported with both points' pool accuracies and its edge;
    once the grid's choice is the profile's own point, nothing is behind."""
    from nbgraft.runs import tuning as T

    def fake_run(method, dataset, shots, seed, profile, **over):
        return {"val_accuracy": 50.0 + over.get("steps", 20) / 2 - 5.0 * ("lr" in over), "wall_s": 1.0}

    monkeypatch.setattr(T, "run_method", fake_run)
    assert T.behind("tiny", tmp_path).empty  # no table yet
    T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    late = T.behind("tiny", tmp_path)
    now = T.profile_point("tiny", "kd", "cifar10", "vgg16")
    assert len(late) == 1 and late.method.item() == "kd" and late.edges.item() == "longest"
    assert late.held_length.item() == now["length_value"] == "20 steps" and late.chosen_length.item() == "40 steps"
    assert late.held_val_accuracy.item() == 60.0 and late.chosen_val_accuracy.item() == 70.0

    monkeypatch.setattr(T, "run_method", lambda method, dataset, shots, seed, profile, **over:
                        {"val_accuracy": 60.0 - 5.0 * bool({"lr", "steps"} & set(over)), "wall_s": 1.0})
    (tmp_path / "tables" / "tuning_tiny.csv").unlink()
    T.run_tuning(["kd"], "cifar10", "tiny", output_root=tmp_path, extend=False)
    assert T.behind("tiny", tmp_path).empty


def test_nbgraft_tune_prints_the_choices_of_the_setting_it_tuned(tmp_path, monkeypatch, capsys):
    """The table holds every setting's grids; the command reports the one it was asked for, and its table's path."""
    from nbgraft.cli import main
    from nbgraft.runs import tuning as T

    monkeypatch.setattr(T, "run_method", lambda method, dataset, shots, seed, profile, **over:
                        {"val_accuracy": 60.0 - 5.0 * bool({"lr", "steps"} & set(over)), "wall_s": 1.0})
    (tmp_path / "tables").mkdir()
    other = pd.DataFrame([{"method": "kd", "teacher": "resnet56", "dataset": "cifar10", "shots": n, "seed": 0,
                           "lr_scale": 1.0, "length": 1.0, "lr_value": 1e-3, "length_value": "300 steps",
                           "val_accuracy": 99.0, "wall_s": 1.0} for n in (1, 10)])
    other.to_csv(tmp_path / "tables" / "tuning_tiny.csv", index=False)
    assert main(["tune", "--profile", "tiny", "--methods", "kd", "--extensions", "0",
                 "--output-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "60.00% mean over N" in out and "99.00" not in out and "tables/tuning_tiny.csv" in out
    assert set(pd.read_csv(tmp_path / "tables" / "tuning_tiny.csv").teacher) == {"resnet56", "vgg16"}
