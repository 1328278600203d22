"""Choosing without labels: the probes the label-free score reads, the score itself, and the selection table's
choices and columns on a tiny grid (issue 30)."""

import pandas as pd
import pytest
import torch

from nbgraft import evaluate as E
from nbgraft.runs import selection as S
from nbgraft.runs import tuning


def _shots(k: int) -> torch.Tensor:
    """k images, image i every pixel equal to i + 1 (so a probe shows which shots it holds; padding is 0)."""
    return torch.arange(1, k + 1, dtype=torch.float32).view(k, 1, 1, 1).expand(k, 3, 32, 32).contiguous()


def test_each_probe_pastes_a_box_of_one_shot_into_another_and_replays_by_seed():
    x = _shots(5)
    p = E.probe_images(x, 256, seed=3)
    assert p.shape == (256, 3, 32, 32)
    assert torch.equal(p, E.probe_images(x, 256, seed=3)) and not torch.equal(p, E.probe_images(x, 256, seed=4))
    for img in p:
        values = set(img.unique().tolist()) - {0.0}
        assert len(values) == 2  # two different shots in every probe, never one shot alone
        # each covers a quarter to three quarters of the image, less what its crop's zero padding takes
        shares = [(img[0] == v).float().mean().item() for v in values]
        assert all(0.02 <= share <= 0.76 for share in shares), shares
    with pytest.raises(ValueError, match="at least two"):
        E.probe_images(x[:1])


def test_the_teacher_agrees_with_itself_everywhere_and_a_different_network_less():
    torch.manual_seed(0)

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(8, 10))

    teacher, other = net(), net()
    x = torch.randn(20, 3, 32, 32)
    assert E.label_free_score(teacher, teacher, x) == 100.0
    score = E.label_free_score(other, teacher, x)
    assert 0.0 <= score < 100.0
    assert E.teacher_agreement(other, teacher, E.training_views(x, 64)) < 100.0


def _grid(val, free):
    rows = []
    for k, (lr, length) in enumerate([(1.0, 0.5), (1.0, 1.0), (3.0, 1.0)]):
        rows.append({"method": "netgraft", "teacher": "vgg16", "dataset": "cifar10", "shots": 1, "seed": 0,
                     "lr_scale": lr, "length": length, "lr_value": 1e-3 * lr, "length_value": f"{length}",
                     "val_accuracy": val[k], "label_free_agreement": free[k], "training_view_agreement": 99.0})
    return pd.DataFrame(rows)


def test_each_selection_keeps_its_own_best_point_or_the_shortest_near_it():
    grid = _grid(val=[80.0, 82.0, 81.0], free=[90.0, 89.0, 95.0])
    labelled, free = S.choose(grid, "labelled_pool").iloc[0], S.choose(grid, "label_free").iloc[0]
    assert (labelled.lr_scale, labelled.length, labelled.val_accuracy) == (1.0, 1.0, 82.0)
    assert (free.lr_scale, free.length, free.val_accuracy, free.label_free_agreement) == (3.0, 1.0, 81.0, 95.0)
    near = S.choose(_grid(val=[81.8, 82.0, 70.0], free=[0, 0, 0]), "labelled_pool").iloc[0]
    assert near.length == 0.5  # within tuning.TIE_POINTS of the best: the shortest wins, as the book's tuning decides


def test_a_carried_over_recipe_is_the_source_recipe_with_the_target_reporting():
    over = S.transferred_overrides("cpu", "cifar100", "vgg16")
    assert over == {"block_epochs": (200,), "net_epochs": (100,)}
    res = S.transferred_overrides("cpu", "cifar10", "resnet56")
    assert res["net_epochs"] == (100,) and res["feature_points"] == "exit" and "part_test_scores" not in res
    assert S.transferred_overrides("cpu", "cifar10", "vgg16") == {}


def test_a_grid_point_skipping_a_stage_keeps_skipping_it():
    sched = tuning.get_profile("cpu").recipe("netgraft", "cifar10", "resnet56")
    assert tuning.overrides(sched, 1.0, 2.0)["net_epochs"] == (0,)
    # the profile's own point in the grid's plain numbers (how chapter 5 tells a winner the profile holds)
    assert tuning.profile_point("cpu", "netgraft", "cifar10", "resnet56") == {"lr_value": 1e-3,
                                                                             "length_value": "150 + 0 epochs"}


def test_the_selection_table_on_a_tiny_grid(data_root, tiny_outputs, monkeypatch):
    monkeypatch.setattr(tuning, "LR_SCALES", (1.0, 3.0))
    monkeypatch.setattr(tuning, "LENGTHS", (1.0,))
    monkeypatch.setattr(S, "GRID_TABLE", "selection_grid_unit")  # apart from chapter 5's tiny run (test_book)
    settings = (("cifar10", "vgg16", (1,)), ("cifar100", "vgg16", (1,)))
    kw = {"data_root": data_root, "output_root": tiny_outputs}
    assert S.selection_grid("tiny", settings, run=False, **kw) is None  # nothing run yet: nothing to read back
    grid = S.selection_grid("tiny", settings, extend=False, **kw)
    assert len(grid) == 4 and grid.label_free_agreement.between(0, 100).all()
    again = S.selection_grid("tiny", settings, run=False, **kw)
    # the table on disk keeps 4 significant digits (plots.save_table): read back within that rounding
    pd.testing.assert_frame_equal(grid.reset_index(drop=True), again.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-3)
    picked, runs = S.selection_runs(grid, "tiny", settings, seeds=(0, 1), **kw)
    assert list(picked.selection) == ["labelled_pool", "labelled_pool", "label_free", "label_free", "transferred"]
    table = S.selection_table(picked, runs, tiny_outputs)
    assert list(table.columns) == S.COLUMNS
    assert (table.seeds == 2).all() and table.accuracy_mean.between(0, 100).all()
    by = table.set_index(["dataset", "selection"])
    assert by.loc[("cifar10", "labelled_pool"), "labels_used"] == S.VAL_REPORT_SIZE
    assert by.loc[("cifar10", "label_free"), ["labels_used", "images_used"]].tolist() == [0, 10]
    assert by.loc[("cifar100", "transferred"), ["labels_used", "images_used"]].tolist() == [0, 0]
    assert (tiny_outputs / "tables" / "selection.csv").is_file()


def test_the_committed_selection_grid_keeps_its_cache_keys(data_root):
    """Every grid point of the committed `selection_grid.csv` (its learning-rate scale rounded in the table) maps
    back to the cache key its run was stored under, so chapter 5 reads the section back instead of training it."""
    from pathlib import Path

    from nbgraft.runs.setting import run_entry

    table = pd.read_csv(Path(__file__).resolve().parents[1] / "outputs" / "tables" / "selection_grid.csv",
                        dtype={"cache_key": str})
    assert {(d, t) for d, t in zip(table.dataset, table.teacher)} == {(d, t) for d, t, _ in S.SETTINGS}
    for r in table.itertuples():
        over = S.grid_overrides("cpu", r.dataset, r.teacher, r.lr_scale, r.length)
        entry = run_entry(S.METHOD, r.dataset, r.shots, r.seed, "cpu", teacher=r.teacher, data_root=data_root, **over)
        assert entry.key == r.cache_key, r
