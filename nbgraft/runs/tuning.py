"""How each method's recipe was chosen: the same small grid for every method, scored on the validation pool.

Every method (both NetGraft recipes and the four baselines) gets the same budget: its profile recipe
with all learning rates scaled by 1/3, 1 or 3 and its length (epochs or steps) halved, kept or doubled,
nine configurations, each run at 1 and 10 shots on the first seed. The configuration with the best mean
validation accuracy (or the shortest within half a point of it) is the one the profile should hold:
the x1 / x1 point when the profile is up to date. The test set is never read here. Runs are cached like
any other, and the table is rewritten after each, so an interrupted tuning resumes.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from .experiments import run_method
from ..plots import save_table
from ..methods import METHODS
from ..profiles import get_profile
from ..training import progress

LR_SCALES = (1 / 3, 1.0, 3.0)
LENGTHS = (0.5, 1.0, 2.0)
SHOTS = (1, 10)
_LR_FIELDS = ("block_lr", "block_adapter_lr", "net_lr", "net_adapter_lr", "lr")
_LENGTH_FIELDS = ("block_epochs", "net_epochs", "steps")


def _scaled(value, factor: float, whole: bool):
    if isinstance(value, tuple):
        return tuple(_scaled(v, factor, whole) for v in value)
    return max(1, round(value * factor)) if whole else value * factor


def overrides(sched, lr_scale: float, length: float) -> dict:
    """The schedule fields this grid point changes (learning rates and lengths), as overrides."""
    names = {f.name for f in fields(sched)}
    out = {k: _scaled(getattr(sched, k), lr_scale, False) for k in _LR_FIELDS if k in names and lr_scale != 1}
    out.update({k: _scaled(getattr(sched, k), length, True) for k in _LENGTH_FIELDS if k in names and length != 1})
    return out


def _absolute(sched, over: dict) -> dict:
    """The grid point in plain numbers: its main learning rate and its length (epochs per stage, or steps)."""
    get = (lambda k: over.get(k, getattr(sched, k)))
    if hasattr(sched, "steps"):
        return {"lr_value": get("lr"), "length_value": f"{get('steps')} steps"}
    return {"lr_value": get("block_lr")[0],
            "length_value": f"{'/'.join(map(str, get('block_epochs')))} + {'/'.join(map(str, get('net_epochs')))} epochs"}


def run_tuning(methods=METHODS, dataset: str = "cifar10", profile="cpu", *, teacher: str = "vgg16", seed: int = 0,
               shots=SHOTS, data_root=None, output_root=None, device=None, table_name: str = "tuning") -> pd.DataFrame:
    """Every method x grid point x N; returns (and writes) the table with one row per run and the choice."""
    profile = get_profile(profile)
    cells = [(m, lr, ln, n) for m in methods for lr in LR_SCALES for ln in LENGTHS for n in shots]
    rows = []
    for method, lr, length, n in progress(cells, desc="tuning", leave=True):
        sched = profile.recipe(method, dataset, teacher)
        over = overrides(sched, lr, length)
        m = run_method(method, dataset, n, seed, profile, teacher=teacher, data_root=data_root,
                       output_root=output_root, device=device, **over)
        rows.append({"method": method, "teacher": teacher, "dataset": dataset, "shots": n, "seed": seed,
                     "lr_scale": round(lr, 4), "length": length, **_absolute(sched, over),
                     "val_accuracy": m["val_accuracy"], "wall_s": m["wall_s"]})
        save_table(pd.DataFrame(rows), table_name, output_root)
    return choices(pd.DataFrame(rows))


TIE_POINTS = 0.5  # within this many points of the best, the shortest configuration wins (less than the
# standard error of an accuracy on the 1,000 validation images, about 1 point)


def choices(table: pd.DataFrame) -> pd.DataFrame:
    """The table with, per method, the mean validation accuracy over N of each grid point and which won:
    the best mean, or the shortest configuration within TIE_POINTS of it (then the best among those)."""
    mean = (table.groupby(["method", "lr_scale", "length"])["val_accuracy"].mean().rename("val_accuracy_mean_over_n")
            .reset_index())
    top = mean.groupby("method")["val_accuracy_mean_over_n"].transform("max")
    near = mean[mean["val_accuracy_mean_over_n"] >= top - TIE_POINTS]
    shortest = near[near["length"] == near.groupby("method")["length"].transform("min")]
    best = shortest.loc[shortest.groupby("method")["val_accuracy_mean_over_n"].idxmax(), ["method", "lr_scale", "length"]]
    best["chosen"] = True
    out = table.merge(mean, on=["method", "lr_scale", "length"]).merge(best, on=["method", "lr_scale", "length"],
                                                                       how="left")
    out["chosen"] = out["chosen"].fillna(False).astype(bool)
    order = {m: k for k, m in enumerate(METHODS)}
    return out.sort_values(["method", "lr_scale", "length", "shots"], key=lambda c: c.map(order) if c.name == "method"
                           else c).reset_index(drop=True)
