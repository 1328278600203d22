"""Tidy tables for the book: the grid of runs a chapter asks for, and summaries of them as pandas frames.

A chapter names data sets, shots and seeds; every run comes from the experiment cache (trained
first when missing), so re-running a chapter with the same parameters only reads JSON. Only the
runs asked for are tabled, never whatever else happens to sit in the cache.
"""

from __future__ import annotations

import math
from itertools import product

import pandas as pd

from .experiments import graft_seeds, run_method, runs_frame  # noqa: F401  (runs_frame: for the chapters)
from ..methods import BASELINE_METHODS as BASELINES
from ..methods import BOOK_METHODS as BOOK  # noqa: F401  (the methods chapters 2-6 and 8 compare)
from ..methods import COMPARED_WITH_FIELD as FIELD  # noqa: F401  (the methods table's, with the field's methods)
from ..methods import GRAFT_METHODS, METHODS
from ..methods import LABELS as METHOD_LABELS
RUN_KEYS = ["dataset", "shots", "seed"]


def _as_list(value, what: str) -> list:
    values = [value] if isinstance(value, (str, int)) else list(value)
    if not values:
        raise ValueError(f"{what} is empty; give at least one value, e.g. {what}=[0]")
    return values


def run_grid(method: str, datasets, shots, seeds, profile="cpu", **kw) -> list[dict]:
    """Metrics of `method` for every (data set, N, seed), read from the cache or trained now (the seeds of a
    grafting recipe together). `kw` goes to the experiment (teacher, data_root, output_root, device, overrides).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    seeds = _as_list(seeds, "seeds")
    runs = []
    for ds, n in product(_as_list(datasets, "datasets"), _as_list(shots, "shots")):
        if method in GRAFT_METHODS:
            runs += graft_seeds(ds, n, seeds, profile, method=method, **kw)
        else:
            runs += [run_method(method, ds, n, seed, profile, **kw) for seed in seeds]
    return runs


def summarise(df: pd.DataFrame, by=("dataset", "method", "shots"), value: str = "test_accuracy") -> pd.DataFrame:
    """Mean and sample std of `value` over seeds (std is NaN for a single seed: no spread to report)."""
    by = list(by)
    out = (df.groupby(by, sort=True)
             .agg(mean=(value, "mean"), std=(value, "std"), seeds=("seed", "nunique"))
             .reset_index())
    return out.rename(columns={"mean": f"{value}_mean", "std": f"{value}_std"})


def part_label(name: str) -> str:
    """'block4' -> 'block 4', 'block6' -> 'block 6 (classifier)', 'chain4-6' -> 'blocks 4-6'."""
    if name.startswith("block"):
        i = int(name[5:])
        return f"block {i}" + (" (classifier)" if i == 6 else "")
    if name.startswith("chain"):
        return f"blocks {name[5:]}"
    raise ValueError(f"not a grafted part name: {name!r}")


def stage_frame(runs: list[dict], key: str) -> pd.DataFrame:
    """Scores of the grafted networks of each run: `key` = "blocks" (one student block at a time)
    or "chains" (the growing chain); one row per (run, part)."""
    if key not in ("blocks", "chains"):
        raise ValueError(f"key must be 'blocks' or 'chains', got {key!r}")
    rows = [{**{k: m[k] for k in RUN_KEYS}, "part": part, "label": part_label(part), **scores,
             "teacher_test_accuracy": m["teacher_test_accuracy"]}
            for m in runs for part, scores in m[key].items()]
    return pd.DataFrame(rows)


def loss_frame(runs: list[dict], key: str) -> pd.DataFrame:
    """Per-epoch grafting loss of each run: `key` = "block_losses" or "net_losses"; long format."""
    rows = [{**{k: m[k] for k in RUN_KEYS}, "part": part, "label": part_label(part), "epoch": e + 1, "loss": loss}
            for m in runs for part, curve in m[key].items() for e, loss in enumerate(curve)]
    return pd.DataFrame(rows)


def pm(mean: float, std: float, digits: int = 2) -> str:
    """'90.74 ± 0.49', or just the mean when there is no spread (a single seed)."""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


FIDELITY_COLUMNS = ["dataset", "teacher", "method", "shots", "seeds", "accuracy_mean", "accuracy_std",
                    "teacher_accuracy"]


def fidelity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, teacher, method, N) of a runs frame: mean and std of test accuracy over seeds."""
    out = (df.groupby(["dataset", "teacher_name", "method", "shots"], sort=True)
           .agg(seeds=("seed", "nunique"), accuracy_mean=("test_accuracy", "mean"),
                accuracy_std=("test_accuracy", "std"), teacher_accuracy=("teacher_test_accuracy", "first"))
           .reset_index().rename(columns={"teacher_name": "teacher"}))
    return out[FIDELITY_COLUMNS]


SOURCE_COLUMNS = ["source", "images_per_class", "seeds", "accuracy_mean", "accuracy_std", "teacher_accuracy"]


def source_rows(runs: list[dict]) -> pd.DataFrame:
    """One row per (image source, K) of NetGraft runs: mean and std of test accuracy over seeds
    (chapter 7's `07_datafree_netgraft` table; `teacher_accuracy` is the teacher's test accuracy)."""
    df = pd.DataFrame([{"source": m.get("image_source", "real"), "images_per_class": m["shots"], "seed": m["seed"],
                        "test_accuracy": m["test_accuracy"], "teacher": m["teacher_test_accuracy"]} for m in runs])
    out = (df.groupby(["source", "images_per_class"], sort=False)
           .agg(seeds=("seed", "nunique"), accuracy_mean=("test_accuracy", "mean"),
                accuracy_std=("test_accuracy", "std"), teacher_accuracy=("teacher", "first")).reset_index())
    return out[SOURCE_COLUMNS]


def save_fidelity(rows: pd.DataFrame, output_root=None):
    """Write `tables/fidelity.csv`, replacing only the rows of the teachers in `rows` (chapters add their
    own teacher's rows: chapter 5 the VGG16's, the ResNet chapter the ResNet-56's)."""
    from ..plots import save_table, table_path

    path = table_path("fidelity", output_root)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=FIDELITY_COLUMNS)
    keep = old[~old["teacher"].isin(set(rows["teacher"]))] if len(old) else old
    table = pd.concat([keep, rows[FIDELITY_COLUMNS]] if len(keep) else [rows[FIDELITY_COLUMNS]])
    order = {m: k for k, m in enumerate(METHODS)}
    table = table.assign(_o=table["method"].map(order)).sort_values(["teacher", "dataset", "_o", "shots"])
    return save_table(table.drop(columns="_o").reset_index(drop=True), "fidelity", output_root)


def untrained_controls(fidelity: pd.DataFrame, tuned: dict | None = None) -> list[str]:
    """Markdown lines naming every baseline of a fidelity table that stays near chance (under 3x) or falls
    as N grows: such a control did not train, so its gap to NetGraft is no tuned comparison. The VGG16's
    baselines have rates chosen on CIFAR-10's validation pool (CIFAR-100 reuses them) unless `tuned` says
    otherwise: {(method, teacher, data set): the edges of its own grid its choice lies on ("" inside)} for
    every control whose recipe is its grid's choice on that setting (nbgraft.runs.tuning)."""
    from ..data import NUM_CLASSES

    lines, tuned = [], tuned or {}
    rows = fidelity[fidelity["method"].isin(BASELINES)].sort_values("shots")
    for (ds, teacher, m), g in rows.groupby(["dataset", "teacher", "method"], sort=False):
        curve, chance = g["accuracy_mean"].tolist(), 100 / NUM_CLASSES[ds]
        if max(curve) >= 3 * chance and curve[-1] >= curve[0]:
            continue
        untuned = ". Its gap to NetGraft is not a tuned comparison."
        if (m, teacher, ds) in tuned:
            edge = tuned[(m, teacher, ds)]
            why = (": it trains poorly even at the schedule its grid chose on this setting's own validation pool"
                   + (f", on that grid's {edge} edge (a better schedule may lie beyond)" if edge else "") + ".")
        elif teacher == "vgg16":
            why = (": it did not train properly at learning rates chosen for the VGG16 on CIFAR-10's validation pool"
                   + ("" if ds == "cifar10" else ", reused here untuned") + untuned)
        else:
            why = ": it did not train properly at the learning rates probed for this teacher (nbgraft.profiles)" + untuned
        lines.append(
            f"- **Caution, {ds} ({teacher}): {METHOD_LABELS[m]}** scores " + " / ".join(f"{a:.2f}" for a in curve)
            + f"% at N = {', '.join(str(n) for n in g['shots'])} "
            + (f"(chance {chance:g}%)" if max(curve) < 3 * chance else "(lower with more images)") + why)
    return lines
