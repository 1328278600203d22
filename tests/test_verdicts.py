"""Verdicts at the book's smallest effect of interest (issue 32): comparisons of paired runs, the student against
its teacher, and the same comparisons on a second training of the teacher (teacher seeds)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from nbgraft.runs import compare as C
from nbgraft.runs import sweep as S


def _runs(acc: dict, teacher_seed: int = 0, shots: int = 1, teacher_acc: float = 88.0) -> list[dict]:
    return [{"teacher": "vgg16", "teacher_seed": teacher_seed, "dataset": "cifar10", "shots": shots, "seed": s,
             "method": m, "test_accuracy": a, "teacher_test_accuracy": teacher_acc}
            for m, accs in acc.items() for s, a in enumerate(accs)]


def test_comparisons_give_each_pair_its_interval_and_verdict():
    runs = pd.DataFrame(_runs({"netgraft": [80.0, 82.0, 84.0], "pruned_kd": [80.1, 81.9, 84.1],
                               "mir": [78.0, 79.5, 81.0], "kd": [40.0]}))
    out = C.comparisons(runs, [("pruned_kd", "netgraft"), ("mir", "netgraft"), ("netgraft", "kd"),
                               ("fskd", "netgraft")])
    assert list(out.columns) == ["dataset", "shots", *C.COMPARISON_COLUMNS]
    out = out.set_index("method")
    assert "fskd" not in out.index  # a pair the runs do not have is left out
    # pruned_kd - netgraft: +0.1, -0.1, +0.1 -> mean 0.033, sd 0.115: inside +-0.5 -> equivalent
    assert out.loc["pruned_kd", "verdict"] == "equivalent"
    # mir - netgraft: -2, -2.5, -3 -> resolved and beyond the margin
    assert out.loc["mir", "difference_mean"] == pytest.approx(-2.5) and out.loc["mir", "verdict"] == "worse"
    # one shared seed: a difference, no interval, nothing settled
    kd = out.loc["netgraft"]
    assert kd.seeds == 1 and kd.difference_mean == pytest.approx(40.0) and math.isnan(kd.ci95_low)
    assert kd.verdict == "not settled"
    assert C.sentence(out.reset_index().iloc[0]).startswith("pruned_kd - netgraft: **equivalent** (+0.03 [")
    assert "one seed" in C.sentence(out.loc[["netgraft"]].reset_index().iloc[0])


def test_the_student_is_compared_with_its_teacher_on_every_draw():
    runs = pd.DataFrame(_runs({"netgraft": [87.7, 87.8, 87.75]}, teacher_acc=87.9)
                        + _runs({"netgraft": [85.0, 86.0, 85.5]}, shots=10, teacher_acc=87.9))
    out = C.comparisons(C.with_teacher(runs), [("netgraft", "teacher")]).set_index("shots")
    assert out.loc[1, "difference_mean"] == pytest.approx(-0.15)  # resolved below, but within the margin
    assert out.loc[1, "verdict"] == "equivalent" and out.loc[10, "verdict"] == "worse"
    assert (out.seeds == 3).all()


def test_paired_differences_carry_verdicts():
    rows = _runs({"netgraft": [50.0, 60.0, 55.0], "no_mixup": [53.0, 63.5, 57.5], "all_at_once": [50.1, 60.0, 54.9],
                  "random_init": [49.0, 62.0, 54.0]})
    d = S.paired_differences(pd.DataFrame(rows)).set_index("method")
    assert d.loc["no_mixup", "verdict"] == "better" and d.loc["no_mixup", "resolved"]
    assert d.loc["all_at_once", "verdict"] == "equivalent" and not d.loc["all_at_once", "resolved"]
    assert d.loc["random_init", "verdict"] == "not settled"
    # at a margin of 5 points the same interval (+1.76 to +4.24) lies within the margin: no difference worth calling
    assert S.paired_differences(pd.DataFrame(rows), margin=5.0).set_index("method").loc["no_mixup", "verdict"] == \
        "equivalent"


def test_robustness_table_has_the_issue_columns_and_says_which_verdicts_hold():
    acc0 = {"netgraft": [80.0, 82.0, 84.0], "all_at_once": [79.9, 82.1, 84.0], "mir": [78.0, 79.5, 81.0]}
    acc1 = {"netgraft": [81.0, 83.0, 84.0], "all_at_once": [79.0, 81.2, 82.3], "mir": [79.0, 80.5, 82.0]}
    other = _runs({"netgraft": [10.0, 10.0, 10.0], "mir": [0.0, 0.0, 0.0]})
    for r in other:
        r["dataset"] = "cifar100"  # another data set: not part of the robustness table
    table = pd.DataFrame(_runs(acc0, 0) + _runs(acc1, 1) + other)
    robust = S.robustness_table(table)
    assert list(robust.columns) == ["comparison", "shots", "teacher_seed", "difference_mean", "ci95_low", "ci95_high",
                                    "verdict"]
    assert len(robust) == 4 and set(robust.comparison) == {"all_at_once - netgraft", "mir - netgraft"}
    held = S.held_verdicts(robust).set_index("comparison")
    assert held.loc["mir - netgraft", "holds"] and held.loc["mir - netgraft", "teacher_seed_0"] == "worse"
    assert held.loc["all_at_once - netgraft", "teacher_seed_0"] == "equivalent"
    assert held.loc["all_at_once - netgraft", "teacher_seed_1"] == "worse"
    assert not held.loc["all_at_once - netgraft", "holds"]


def test_the_robustness_grid_reruns_the_cifar10_comparisons_on_each_teacher():
    runs = S.get_grid("robustness").runs()
    assert {r.teacher_seed for r in runs} == {0, 1} and {r.dataset for r in runs} == {"cifar10"}
    per_teacher = [r for r in runs if r.teacher_seed == 1]
    methods_1_10 = set(S.ABLATIONS) | set(S.COMPARED_WITH_FIELD)
    assert len(per_teacher) == 3 * (2 * len(methods_1_10) + len(S.COMPARED_WITH_FIELD))
    assert {(r.shots, r.seed, r.method, r.teacher) for r in per_teacher} == \
        {(r.shots, r.seed, r.method, r.teacher) for r in runs if r.teacher_seed == 0}
    assert S.get_grid("robustness").restrict(seeds=[0]).runs()[0].teacher_seed == 0
    assert "teacher seed 1" in per_teacher[0].label


@pytest.mark.parametrize("kw, message", [
    ({"teacher": "resnet56", "teacher_seed": 1}, "published file"),
    ({"teacher_seed": -1}, "teacher_seed"),
])
def test_a_teacher_seed_nbgraft_cannot_train_says_so(kw, message):
    with pytest.raises(ValueError, match=message):
        S.Cross("cifar10", (1,), (0,), ("netgraft",), **kw)


def test_a_second_teacher_is_its_own_cache_entry_and_its_runs_are_keyed_by_it(data_root, tiny_outputs):
    """teacher_seed=1 trains the same recipe again from another seed: another teacher, other weights, and every run
    on it stored under its own key (the book's teacher keeps the keys it had)."""
    from nbgraft.runs.experiments import cached_runs, prepare, run_entry, run_student
    from nbgraft.runs.setting import check_teacher_seed

    kw = dict(data_root=data_root, output_root=tiny_outputs, device="cpu")
    first, second = (prepare("cifar10", 1, 0, "tiny", teacher_seed=t, **kw) for t in (0, 1))
    assert first.teacher_key != second.teacher_key and second.teacher_seed == 1
    w0, w1 = (next(s.teacher.parameters()) for s in (first, second))
    assert not (w0 == w1).all()
    e0, e1 = (run_entry("fskd", "cifar10", 1, 0, "tiny", teacher_seed=t, data_root=data_root,
                        output_root=tiny_outputs) for t in (0, 1))
    assert e0.key != e1.key and "teacher_seed" not in e0.config and e1.config["teacher_seed"] == 1
    m = run_student("fskd", "cifar10", 1, 0, "tiny", teacher_seed=1, **kw)
    assert m["cache_key"] == e1.key and m["teacher_seed"] == 1
    assert m["teacher_test_accuracy"] == second.teacher_metrics["test_accuracy"]
    # a table of the book's runs (nbgraft table) never pools the second teacher's runs with the first's
    assert m["cache_key"] not in {r["cache_key"] for r in cached_runs("fskd", tiny_outputs, profile="tiny",
                                                                      dataset="cifar10")}
    assert m["cache_key"] in {r["cache_key"] for r in cached_runs("fskd", tiny_outputs, profile="tiny",
                                                                  dataset="cifar10", teacher_seed=1)}
    with pytest.raises(ValueError, match="synthetic"):
        check_teacher_seed(1, "vgg16", "synthetic")
