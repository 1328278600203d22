"""The sweep runner on a tiny grid: resumption after an interruption, the table, and the method variants."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from nbgraft.runs import sweep as S

# 2 N x 2 seeds x (NetGraft, KD), then every ablation at N=1 (seed 0): runs on tiny schedules.
GRID = [
    {"datasets": "cifar10", "shots": [1, 2], "seeds": [0, 1], "methods": ["netgraft", "kd"]},
    {"datasets": "cifar10", "shots": [1], "seeds": [0], "methods": list(S.ABLATIONS)},
]
STOP_AFTER = 3


class Interrupt(KeyboardInterrupt):
    pass


def _metrics_files(root: Path) -> dict[str, int]:
    """Every finished run's metrics.json (teachers aside) and its modification time in ns."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob("cache/*/*/metrics.json"))
            if p.parts[-3] != "teacher"}



@pytest.fixture(scope="module")
def swept(data_root, tmp_path_factory):
    """Run the grid, interrupt it after STOP_AFTER runs (Ctrl-C), then run it again to the end.

    Its own output root (not the session's): the book's tiny runs would otherwise be cached already."""
    root = tmp_path_factory.mktemp("sweep")
    kw = {"profile": "tiny", "data_root": data_root, "output_root": root, "device": "cpu", "table_name": "sweep_test"}
    done = []

    def stop_early(run, metrics):
        done.append(run)
        if len(done) == STOP_AFTER:
            raise Interrupt

    with pytest.raises(Interrupt):
        S.run_sweep(GRID, on_run=stop_early, **kw)
    table_csv = root / "tables" / "sweep_test.csv"
    partial = pd.read_csv(table_csv)
    before = _metrics_files(root)
    seen = []
    table = S.run_sweep(GRID, on_run=lambda run, m: seen.append(run), **kw)
    return {"root": root, "kw": kw, "done": done, "partial": partial, "before": before, "seen": seen,
            "table": table, "csv": pd.read_csv(table_csv)}


def test_interrupted_sweep_keeps_finished_rows(swept):
    partial = swept["partial"]
    assert len(partial) == STOP_AFTER
    assert [tuple(r) for r in partial[["dataset", "shots", "seed", "method"]].itertuples(index=False)] == [
        (r.dataset, r.shots, r.seed, r.method) for r in swept["done"]]
    assert len(swept["before"]) == STOP_AFTER


def test_resumed_sweep_does_not_redo_finished_runs(swept):
    after = _metrics_files(swept["root"])
    for path, mtime in swept["before"].items():
        assert after[path] == mtime, f"{path} was recomputed"
    runs = S.get_grid(GRID).runs()
    assert len(after) == len(runs)  # one cache entry per run, nothing trained twice
    assert swept["seen"] == runs


def test_table_has_every_run_exactly_once(swept):
    table, csv = swept["table"], swept["csv"]
    runs = S.get_grid(GRID).runs()
    keys = list(csv[["dataset", "shots", "seed", "method"]].itertuples(index=False, name=None))
    assert keys == [(r.dataset, r.shots, r.seed, r.method) for r in runs]
    assert len(table) == len(csv) == len(runs) == 8 + len(S.ABLATIONS) - 1  # NetGraft N=1 seed 0 is in both crosses
    graft = csv[csv["method"].isin(S.ABLATIONS)]
    assert graft["cache_key"].notna().all() and graft["cache_key"].is_unique
    for col in ("test_accuracy", "test_agreement", "val_accuracy", "teacher_test_accuracy"):
        assert csv[col].between(0, 100).all(), col
    assert (csv["wall_s"] > 0).all()
    assert (csv["profile"] == "tiny").all()
    assert not csv.select_dtypes("number").isna().any().any()  # every number applies to every method
    schedules = csv["schedule"].map(json.loads)
    assert all("steps" in s for s in schedules[csv["method"] == "kd"])
    assert all("block_epochs" in s for s in schedules[csv["method"].isin(S.ABLATIONS)])
    at_once = csv.query("method == 'all_at_once'").iloc[0]
    assert at_once["overrides"] == 'net_mode="all_at_once"'
    assert json.loads(at_once["schedule"])["net_mode"] == "all_at_once"


def test_rerun_of_a_finished_sweep_trains_nothing_and_gives_the_same_table(swept):
    before = _metrics_files(swept["root"])
    again = S.run_sweep(GRID, **swept["kw"])
    assert _metrics_files(swept["root"]) == before
    pd.testing.assert_frame_equal(again, swept["table"])


def _metrics(swept, method: str) -> dict:
    row = swept["csv"].query("method == @method and shots == 1 and seed == 0").iloc[0]
    return json.loads((swept["root"] / "cache" / "netgraft" / row["cache_key"] / "metrics.json").read_text())


def test_variants_change_what_they_say(swept):
    full = _metrics(swept, "netgraft")
    assert full["block_losses"] and full["net_losses"]
    assert sorted(full["chains"]) == ["chain4-5", "chain4-6"]

    block_only = _metrics(swept, "block_only")
    assert set(block_only["block_losses"]) == {"block4", "block5", "block6"}
    assert block_only["net_losses"] == {}  # the net stage trained nothing

    net_only = _metrics(swept, "net_only")
    assert net_only["block_losses"] == {}
    assert sorted(net_only["net_losses"]) == ["chain4-5", "chain4-6"]

    at_once = _metrics(swept, "all_at_once")
    assert list(at_once["net_losses"]) == ["chain4-6"]
    assert len(at_once["net_losses"]["chain4-6"]) == sum(len(v) for v in full["net_losses"].values())

    assert _metrics(swept, "random_init")["schedule"]["init"] == "random"
    assert _metrics(swept, "no_mixup")["schedule"]["mixup"] is False
    logits = _metrics(swept, "logits_only")
    assert logits["schedule"]["feature_weight"] == 0
    # Same few-shot draw, so a changed loss must change the result.
    assert logits["block_losses"] != full["block_losses"]
    bn = _metrics(swept, "bn_student")
    assert bn["student_spec"]["batch_norm"] is True and bn["schedule"] == _metrics(swept, "netgraft_paper")["schedule"]
    assert full["student_spec"]["batch_norm"] is False


def test_folding_the_adapters_changes_no_prediction(swept):
    details = S.graft_details(swept["table"], swept["root"])
    assert len(details) == (swept["table"]["method"].isin(S.ABLATIONS)).sum() == 4 + len(S.ABLATIONS) - 1
    assert details["fold_same_predictions"].all()
    assert (details["fold_max_abs_logit_diff"] < 1e-3).all()
    assert (details.query("method == 'net_only'")["block_stage_s"] == 0).all()


def test_summaries(swept):
    table = swept["table"]
    summary = S.summarise(table)
    row = summary.query("method == 'kd' and shots == 2").iloc[0]
    runs = table.query("method == 'kd' and shots == 2")["test_accuracy"]
    assert row["seeds"] == 2 and row["accuracy_mean"] == pytest.approx(runs.mean())
    assert row["accuracy_std"] == pytest.approx(runs.std())

    ablations = S.ablation_summary(table, S.graft_details(table, swept["root"]))
    assert list(ablations["method"]) == list(S.ABLATIONS)
    assert set(ablations["shots"]) == {1}
    # full NetGraft is summarised on the ablations' seed only (seed 0), not on both seeds it ran
    full = ablations.query("method == 'netgraft'").iloc[0]
    seed0 = table.query("method == 'netgraft' and shots == 1 and seed == 0")["test_accuracy"].item()
    assert full["seeds"] == 1 and full["accuracy_mean"] == pytest.approx(seed0)
    assert ablations["fold_same_predictions"].all()
    # Each variant against its own recipe on the same draw: with one seed, a difference but no interval.
    mixup = ablations.query("method == 'no_mixup'").iloc[0]
    assert mixup["compared_with"] == "netgraft"
    assert mixup["difference_mean"] == pytest.approx(mixup["accuracy_mean"] - full["accuracy_mean"])
    assert math.isnan(mixup["ci95_low"]) and not mixup["resolved"]
    assert ablations.query("method == 'bn_student'").iloc[0]["compared_with"] == "netgraft_paper"

    paper = S.versus_paper(table)
    assert list(paper["shots"]) == [1]  # the paper reports N in {1, 5, 10}; the grid ran 1 and 2
    assert paper["paper_mean"].iloc[0] == S.PAPER_VGG16[("cifar10", 1)][0]


def test_grids():
    full = S.get_grid("full")
    recipes = len(S.COMPARISON)
    field_only = len(S.FIELD.runs()) - len([r for r in S.FIELD.runs() if r.method in S.COMPARISON])
    assert len(full.runs()) == (2 * 12 * 3 * recipes + 2 * 2 * 3 * (len(S.ABLATIONS) - 2) + 3 * 3 * recipes
                                + field_only)
    assert field_only == 3 * (3 + 2 + 2) * 3  # pruned_kd, fskd, mir at the methods table's seven (teacher, data, N)
    for profile in ("cpu", "paper", "tiny"):
        runs = S.get_grid("default", profile).runs()
        assert len(runs) == len(set(runs)) > 0
    small = S.get_grid("default", "tiny").restrict(datasets=["cifar10"], seeds=[0])
    assert {(r.dataset, r.seed) for r in small.runs()} == {("cifar10", 0)}


def test_the_cpu_book_runs_cifar100_ablations_only_on_request_or_from_the_cache(data_root, tmp_path):
    default, extra = S.get_grid("default", "cpu").runs(), S.get_grid("on_request", "cpu").runs()
    variants = set(S.GRAFT_VARIANTS) - {"all_at_once"}  # the whole student at once also runs at N=1 (chapter 9)
    assert not [r for r in default if r.dataset == "cifar100" and r.method in variants]
    assert {(r.dataset, r.shots) for r in extra} == {("cifar100", 10)} and {r.method for r in extra} == set(S.ABLATIONS)
    kw = {"data_root": data_root, "output_root": tmp_path}  # an empty cache
    assert S.book_grid("cpu", **kw).runs() == default  # nothing cached: left out
    both = S.book_grid("cpu", run_on_request=True, **kw).runs()
    assert both == list(dict.fromkeys(default + extra)) and len(both) > len(default)
    assert S.book_grid("tiny", run_on_request=True, **kw).runs() == S.get_grid("default", "tiny").runs()
    with pytest.raises(ValueError, match="nothing is on request"):
        S.get_grid("on_request", "tiny")


@pytest.mark.parametrize("spec, message", [
    ({"datasets": "mnist", "shots": [1], "seeds": [0]}, "unknown data set"),
    ({"datasets": "cifar10", "shots": [0], "seeds": [0]}, "shots must be"),
    ({"datasets": "cifar10", "shots": [1.5], "seeds": [0]}, "whole numbers"),
    ({"datasets": "cifar10", "shots": [1], "seeds": [0], "methods": ["distill"]}, "unknown or missing methods"),
    ({"datasets": "cifar10", "shot": [1], "seeds": [0]}, "keys datasets, shots, seeds, methods"),
    ("everything", "unknown grid"),
])
def test_bad_grids_say_what_to_do(spec, message):
    with pytest.raises(ValueError, match=message):
        S.get_grid(spec)


def test_paired_differences_call_only_what_their_interval_supports():
    rows = []
    for seed, (base, better, noisy) in enumerate([(50.0, 53.0, 49.0), (60.0, 63.5, 62.0), (55.0, 57.5, 54.0)]):
        rows += [{"dataset": "cifar10", "shots": 1, "seed": seed, "method": "netgraft", "test_accuracy": base},
                 {"dataset": "cifar10", "shots": 1, "seed": seed, "method": "no_mixup", "test_accuracy": better},
                 {"dataset": "cifar10", "shots": 1, "seed": seed, "method": "random_init", "test_accuracy": noisy}]
    d = S.paired_differences(pd.DataFrame(rows)).set_index("method")
    # no_mixup: +3.0, +3.5, +2.5 -> mean 3, sd 0.5, t(2) = 4.303: 3 +- 1.242
    assert d.loc["no_mixup", "difference_mean"] == pytest.approx(3.0)
    assert d.loc["no_mixup", "ci95_low"] == pytest.approx(3.0 - 4.303 * 0.5 / 3 ** 0.5, abs=1e-3)
    assert d.loc["no_mixup", "resolved"]
    assert not d.loc["random_init", "resolved"]  # -1, +2, -1: the interval holds zero
