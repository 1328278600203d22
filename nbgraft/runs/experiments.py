"""The experiments layer's front door: any method of the book by name, and what the cache holds of them.

A run's inputs and key: nbgraft.runs.setting; NetGraft runs: nbgraft.runs.netgraft; student methods:
nbgraft.runs.students.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as D
from ..cache import RUN_METRICS, DamagedEntry, _plain, check_metrics, default_output_root, warn
from ..methods import METHODS, check_method
from ..profiles import get_profile
from .netgraft import graft_seeds, load_student, run_netgraft, untrained_student
from .setting import Setting, base_config, check_parameters, prepare, recipe_for, run_entry, student_spec_for
from .students import run_student
from .teacher import teacher_datasets, teacher_label, teacher_spec_for

__all__ = ["RESULT_COLUMNS", "Setting", "base_config", "cached_runs", "check_parameters", "graft_seeds", "load_student",
           "prepare", "recipe_for", "results_frame", "run_entry", "run_method", "run_netgraft", "run_student",
           "runs_frame", "student_spec_for", "untrained_student"]

def run_method(method: str, dataset: str, shots: int, seed: int = 0, profile="cpu", **kw) -> dict:
    """Any method of the book by name (nbgraft.methods.METHODS), run by its kind's runner; cached."""
    if check_method(method).kind == "graft":
        return run_netgraft(dataset, shots, seed, profile, method=method, **kw)
    return run_student(method, dataset, shots, seed, profile, **kw)


def cached_runs(method: str, output_root=None, *, profile=None, dataset: str | None = None,
                teacher: str = "vgg16", source: str = "real", teacher_seed: int = 0) -> list[dict]:
    """Metrics of every finished run of `method` in the cache (its N images from `source`).

    With `profile` and `dataset`: only that teacher's (its training `teacher_seed`) and data set's runs on the
    profile's own recipe (no ablation overrides, default student), so an old or a variant run never mixes into a
    curve.
    """
    meth = check_method(method)
    kind = meth.cache_kind
    base = Path(output_root if output_root is not None else default_output_root()) / "cache" / kind
    runs = []
    for path in sorted(base.glob("*/metrics.json")):
        if ".damaged-" in path.parent.name:
            continue
        try:
            m = check_metrics(RUN_METRICS, json.loads(path.read_text()), path, path.parent.name)
        except (OSError, ValueError, DamagedEntry) as err:  # json's errors are ValueErrors
            warn(f"skipping the unreadable cache entry {path} ({err}); it is computed again when asked for")
            continue
        if m.get("method", kind) == method and m.get("image_source", "real") == source:
            runs.append(m)
    if profile is None and dataset is None:
        return runs
    if profile is None or dataset is None:
        raise ValueError("give both profile and dataset, or neither")
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    own = json.loads(json.dumps(_plain(recipe_for(profile, method, dataset, teacher, source))))
    student = json.loads(json.dumps(_plain(student_spec_for(teacher_spec_for(dataset, profile, teacher)))))
    return [m for m in runs if m.get("dataset") == dataset and m.get("profile") == profile.name
            and m.get("teacher_name", "vgg16") == teacher_label(teacher) and m.get("teacher_seed", 0) == teacher_seed
            and m.get("schedule") == own
            and m.get("student_spec") == student]


RESULT_COLUMNS = ["method", "teacher_name", "dataset", "profile", "shots", "seed", "test_accuracy", "test_agreement",
                  "val_accuracy", "teacher_test_accuracy", "wall_s"]


def results_frame(output_root=None, methods=METHODS, profile=None, teacher: str = "vgg16"):
    """One row per finished run in the cache (the columns of RESULT_COLUMNS); with `profile`, only
    runs on that profile's own recipes (see cached_runs)."""
    if profile is None:
        runs = [m for method in methods for m in cached_runs(method, output_root)]
    else:
        runs = [m for method in methods for ds in teacher_datasets(teacher)
                for m in cached_runs(method, output_root, profile=profile, dataset=ds, teacher=teacher)]
    return runs_frame(runs)


def runs_frame(runs: list[dict]):
    """One row per run's metrics: method, teacher, data set, N, seed, accuracies (%), wall time (s)."""
    import pandas as pd

    rows = [{c: m.get(c, "vgg16" if c == "teacher_name" else None) for c in RESULT_COLUMNS} for m in runs]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
