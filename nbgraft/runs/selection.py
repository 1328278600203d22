"""What choosing costs: the book's NetGraft recipe chosen over the tuning grid (`nbgraft.runs.tuning`) by the labelled
validation pool and by the label-free score (`nbgraft.evaluate.label_free_score`: agreement with the teacher on
CutMix probes of the N shots), and the recipe chosen on CIFAR-10's VGG16 carried unchanged to another data set and
teacher family, each then run on three draws and scored on the test set (`outputs/tables/selection.csv`).

A user with N images per class chooses with what they have: each choice here is made at one N on the grid's runs at
that N (seed 0's draw, like the book's tuning), and applied to every seed. The test set only scores the choices.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pandas as pd

from .. import data as D
from ..cache import cached
from ..evaluate import PROBE_SALT, PROBES, label_free_score, teacher_agreement, training_views
from ..plots import save_table, table_path
from ..profiles import TRANSFER_SOURCE, get_profile, transfer_recipe
from .netgraft import graft_seeds, load_student
from .setting import VAL_REPORT_SIZE, prepare, run_entry
from .teacher import check_teacher, teacher_label
from .tuning import choices, overrides, run_tuning

METHOD = "netgraft"
# (data set, teacher, N): where the choices are compared (issue 30); ResNet-56's grid runs at N = 10 only
SETTINGS = (("cifar10", "vgg16", (1, 10)), ("cifar100", "vgg16", (1, 10)), ("cifar10", "resnet56", (10,)))
SELECTIONS = ("labelled_pool", "label_free", "transferred")
SEEDS = (0, 1, 2)
GRID_TABLE = "selection_grid"
# Fields that say what a run reports, not how it trains: a carried-over recipe keeps the target's.
REPORTING_FIELDS = ("val_every", "part_test_scores")
# a grid point as `nbgraft.runs.tuning` writes it; selection_grid.csv adds the run's key and its label-free scores
TUNING_COLUMNS = ["method", "teacher", "dataset", "shots", "seed", "lr_scale", "length", "lr_value", "length_value",
                  "val_accuracy", "wall_s"]
COLUMNS = ["dataset", "teacher", "shots", "selection", "labels_used", "images_used", "accuracy_mean",
           "accuracy_std", "seeds"]


def _exact(lr_scale: float) -> float:
    """The grid's learning-rate scale (a power of 3) from its rounded value in a table."""
    return 3.0 ** round(math.log(lr_scale, 3))


def grid_overrides(profile, dataset: str, teacher: str, lr_scale: float, length: float) -> dict:
    """The schedule overrides of a grid point (as `tuning.overrides`, from a table's rounded scale)."""
    return overrides(get_profile(profile).recipe(METHOD, dataset, teacher), _exact(lr_scale), length)


def transferred_overrides(profile, dataset: str, teacher: str) -> dict:
    """The overrides that turn the target's recipe into the one carried over (`profiles.transfer_recipe`), except
    for what a run reports."""
    mine = asdict(get_profile(profile).recipe(METHOD, dataset, teacher))
    theirs = asdict(transfer_recipe(profile, METHOD))
    return {k: v for k, v in theirs.items() if k not in REPORTING_FIELDS and mine[k] != v}


def _scores(m: dict, profile, teacher: str, kw: dict) -> dict:
    """Label-free scores of one finished grid run's student (cached per run and probe count)."""
    def compute() -> dict:
        s = prepare(m["dataset"], m["shots"], m["seed"], profile, teacher=teacher, **kw)
        student = load_student(m, kw.get("output_root"), device=s.x.device)
        return {"label_free_agreement": label_free_score(student, s.teacher, s.x, m["seed"]),
                "training_view_agreement": teacher_agreement(student, s.teacher,
                                                             training_views(s.x, PROBES, m["seed"]))}

    got = cached("labelfree_score", {"run": m["cache_key"], "probes": PROBES, "salt": PROBE_SALT,
                                     "rule": "cutmix 0.25-0.75"}, compute, kw.get("output_root"))
    return {k: got[k] for k in ("label_free_agreement", "training_view_agreement")}


def _teacher_of(settings, dataset: str, label: str) -> str:
    return next(t for d, t, _ in settings if d == dataset and teacher_label(check_teacher(t, d)) == label)


def _point(settings, profile, r) -> tuple[str, dict]:
    """(teacher, schedule overrides) of a row of the grid or of the choices: its grid point, or for a carried-over
    choice the source's recipe."""
    teacher = _teacher_of(settings, r.dataset, r.teacher)
    if getattr(r, "selection", None) == "transferred":
        return teacher, transferred_overrides(profile, r.dataset, teacher)
    return teacher, grid_overrides(profile, r.dataset, teacher, r.lr_scale, r.length)


def selection_grid(profile="cpu", settings=SETTINGS, *, run: bool = True, extend: bool = True, data_root=None,
                   output_root=None, device=None) -> pd.DataFrame | None:
    """The tuning grid of the book's recipe for every setting (grown past a labelled choice on its edge, as
    `nbgraft tune` does), each run with its validation accuracy and its label-free scores; written to
    `tables/selection_grid.csv`. Without `run`, the grid that table lists, read back when every run of it is
    cached (None otherwise)."""
    kw = {"data_root": data_root, "output_root": output_root, "device": device}
    if run:
        tables = []
        for dataset, teacher, shots in settings:
            label = teacher_label(check_teacher(teacher, dataset))
            t = run_tuning((METHOD,), dataset, profile, teacher=teacher, shots=shots, extend=extend,
                           table_name=GRID_TABLE, **kw)
            tables.append(t[(t.dataset == dataset) & (t.teacher == label) & (t.method == METHOD)])
        grid = pd.concat(tables, ignore_index=True)
    else:
        path = table_path(GRID_TABLE, output_root)
        if not path.is_file():
            return None
        grid = pd.read_csv(path)
        keep = [(d, teacher_label(check_teacher(t, d))) for d, t, _ in settings]
        grid = grid[[(d, t) in keep for d, t in zip(grid.dataset, grid.teacher)]]
        if grid.empty or not all(
                run_entry(METHOD, r.dataset, r.shots, r.seed, profile, teacher=teacher, data_root=data_root,
                          output_root=output_root, **over).done
                for r in grid.itertuples() for teacher, over in [_point(settings, profile, r)]):
            return None
    grid = grid[TUNING_COLUMNS]
    rows = []
    for r in grid.itertuples(index=False):
        teacher, over = _point(settings, profile, r)
        m = graft_seeds(r.dataset, r.shots, [r.seed], profile, teacher=teacher, **over, **kw)[0]
        rows.append({**r._asdict(), "cache_key": m["cache_key"], **_scores(m, profile, teacher, kw)})
    out = pd.DataFrame(rows)
    save_table(out, GRID_TABLE, output_root)
    return out


def choose(grid: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Per (data set, teacher, N) the grid point a selection keeps: the best score at that N (validation accuracy
    for the labelled pool, teacher agreement on the probes for the label-free rule), or the shortest point within
    `tuning.TIE_POINTS` of it, as the book's tuning decides."""
    column = {"labelled_pool": "val_accuracy", "label_free": "label_free_agreement"}[selection]
    out = []
    for (dataset, teacher, shots), g in grid.groupby(["dataset", "teacher", "shots"], sort=False):
        picked = choices(g.assign(pool_accuracy=g.val_accuracy, val_accuracy=g[column]))
        win = picked[picked.chosen].iloc[0]
        out.append({"dataset": dataset, "teacher": teacher, "shots": shots, "selection": selection,
                    "lr_scale": win.lr_scale, "length": win.length, "lr_value": win.lr_value,
                    "length_value": win.length_value, "val_accuracy": win.pool_accuracy,
                    "label_free_agreement": win.label_free_agreement})
    return pd.DataFrame(out)


def selection_runs(grid: pd.DataFrame, profile="cpu", settings=SETTINGS, seeds=SEEDS, *, run: bool = True,
                   data_root=None, output_root=None, device=None) -> tuple[pd.DataFrame, list[dict]]:
    """(choices, runs): every selection's choice per setting and N, and its runs on `seeds` (trained when `run`,
    else None when any is missing), each run's metrics with its selection under "selection"."""
    kw = {"data_root": data_root, "output_root": output_root, "device": device}
    picked = pd.concat([choose(grid, s) for s in SELECTIONS[:2]], ignore_index=True)
    extra = []
    for dataset, teacher, shots in settings:
        if (dataset, teacher) == TRANSFER_SOURCE:
            continue
        for n in shots:
            extra.append({"dataset": dataset, "teacher": teacher_label(check_teacher(teacher, dataset)), "shots": n,
                          "selection": "transferred", "lr_scale": float("nan"), "length": float("nan")})
    picked = pd.concat([picked, pd.DataFrame(extra)], ignore_index=True)
    points = [_point(settings, profile, r) for r in picked.itertuples()]
    picked = picked.assign(overrides=[", ".join(f"{k}={v}" for k, v in sorted(over.items())) or "the profile's recipe"
                                      for _, over in points])
    if not run and not all(run_entry(METHOD, r.dataset, r.shots, s, profile, teacher=t, data_root=data_root,
                                     output_root=output_root, **over).done
                           for (t, over), r in zip(points, picked.itertuples()) for s in seeds):
        return picked, None
    runs = []
    for (teacher, over), r in zip(points, picked.itertuples()):
        for m in graft_seeds(r.dataset, r.shots, list(seeds), profile, teacher=teacher, **over, **kw):
            runs.append({**m, "selection": r.selection})
    return picked, runs


def selection_table(picked: pd.DataFrame, runs: list[dict], output_root=None) -> pd.DataFrame:
    """selection.csv: per setting, N and selection, the test accuracy of the chosen recipe over seeds, with the
    labels and real images the choice read (the labelled pool's scored images and the grid's draw; the label-free
    rule the draw alone; a carried-over recipe nothing of this data set)."""
    df = pd.DataFrame(runs)
    rows = []
    for r in picked.itertuples():
        g = df[(df.dataset == r.dataset) & (df.teacher_name == r.teacher) & (df.shots == r.shots)
               & (df.selection == r.selection)]
        draw = 0 if r.selection == "transferred" else r.shots * D.NUM_CLASSES[r.dataset]
        labels = VAL_REPORT_SIZE if r.selection == "labelled_pool" else 0
        rows.append({"dataset": r.dataset, "teacher": r.teacher, "shots": r.shots, "selection": r.selection,
                     "labels_used": labels, "images_used": draw + labels, "accuracy_mean": g.test_accuracy.mean(),
                     "accuracy_std": g.test_accuracy.std(), "seeds": len(g)})
    table = pd.DataFrame(rows, columns=COLUMNS)
    save_table(table, "selection", output_root)
    return table
