"""Tidy tables for the book: the grid of runs a chapter asks for, and summaries of them as pandas frames.

A chapter names data sets, shots and seeds; every run comes from the experiment cache (trained
first when missing), so re-running a chapter with the same parameters only reads JSON. Only the
runs asked for are tabled, never whatever else happens to sit in the cache.
"""

from __future__ import annotations

import math
from itertools import product

import pandas as pd

from .experiments import run_baseline, run_netgraft, runs_frame  # noqa: F401  (runs_frame: for the chapters)

METHODS = ("netgraft", "kd", "scratch")
METHOD_LABELS = {"netgraft": "NetGraft", "kd": "KD on the N shots", "scratch": "scratch on the N shots (labels)",
                 "teacher": "teacher"}
RUN_KEYS = ["dataset", "shots", "seed"]


def _as_list(value, what: str) -> list:
    values = [value] if isinstance(value, (str, int)) else list(value)
    if not values:
        raise ValueError(f"{what} is empty; give at least one value, e.g. {what}=[0]")
    return values


def run_grid(method: str, datasets, shots, seeds, profile="cpu", **kw) -> list[dict]:
    """Metrics of `method` for every (data set, N, seed), read from the cache or trained now.

    `kw` goes to run_netgraft / run_baseline (data_root, output_root, device, schedule overrides).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    runs = []
    for ds, n, seed in product(_as_list(datasets, "datasets"), _as_list(shots, "shots"), _as_list(seeds, "seeds")):
        if method == "netgraft":
            runs.append(run_netgraft(ds, n, seed, profile, **kw))
        else:
            runs.append(run_baseline(method, ds, n, seed, profile, **kw))
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
