"""The sweep runner: a grid of (data set, N, seed, method) runs pushed through the experiment cache.

Every run is cached by its config, so asking for a finished run only reads it back and an
interrupted sweep resumes at the first unfinished run. The tidy results table (one row per run) is
rewritten atomically after every run, so an interruption never loses a finished row. The grids the
book uses live here, keyed by profile, so the notebook and the command line run the same thing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..cache import default_output_root
from ..data import DATASETS, check_dataset
from ..methods import BASELINE_METHODS, BOOK_METHODS, COMPARED_WITH_FIELD, GRAFT_METHODS, LABELS, STUDENT_METHODS
from ..methods import METHODS as RECIPES
from ..plots import save_table
from ..profiles import get_profile
from ..training import progress
from .compare import MARGIN, comparisons
from .experiments import graft_seeds, run_entry, run_student
from .setting import check_teacher_seed
from .teacher import as_teacher, check_teacher, teacher_label

# NetGraft with one piece removed or swapped: overrides of a recipe's schedule ("netgraft", the book's,
# unless `recipe` says otherwise) and optionally other student options. Each is compared with its recipe.
GRAFT_VARIANTS: dict[str, dict] = {
    "block_only": {"net_epochs": (0,)},  # block grafting only: the net stage trains nothing
    "net_only": {"block_epochs": (0,)},  # no block stage: the chain is grafted from its starting blocks
    "all_at_once": {"net_mode": "all_at_once"},  # one net step over the whole student, same epochs
    "random_init": {"init": "random"},  # the paper's random student blocks, everything else the book's
    "logits_only": {"feature_weight": 0.0, "logit_weight": 1.0},  # the paper's loss: logits alone
    "no_mixup": {"mixup": False},
    "bn_student": {"recipe": "netgraft_paper", "student": {"batch_norm": True}},  # the book's old student
}
VARIANT_LABELS = {
    **{m: LABELS[m] for m in GRAFT_METHODS},
    "block_only": "block grafting only", "net_only": "net stage only", "random_init": "random init (paper)",
    "logits_only": "loss on logits only",
    "no_mixup": "no mixup", "all_at_once": "whole student at once",
    "bn_student": "paper recipe, student with BatchNorm",
}


def variant(method: str) -> tuple[str, dict, dict | None]:
    """(recipe, schedule overrides, student options) of any method of the book or an ablation variant: what its
    cache entry is found by (`run_entry`)."""
    if method in RECIPES:
        return method, {}, None
    v = dict(GRAFT_VARIANTS[method])
    return v.pop("recipe", "netgraft"), {k: x for k, x in v.items() if k != "student"}, v.get("student")


def reference(method: str) -> str:
    """The recipe a variant is compared with."""
    return variant(method)[0]
BASELINES = BASELINE_METHODS
METHODS = (*RECIPES, *GRAFT_VARIANTS)
COMPARISON = BOOK_METHODS  # accuracy vs N: both NetGraft recipes and the four baselines
ABLATIONS = ("netgraft", "netgraft_paper", *GRAFT_VARIANTS)  # at a fixed N, next to the recipe they change

# Shen et al., AAAI 2021, VGG16 teacher and student, test accuracy (%) mean and std: quoted, not ours.
# The paper's numbers are the best test epoch of 5 runs on one fixed few-shot draw.
PAPER_VGG16 = {
    ("cifar10", 1): (90.74, 0.49), ("cifar10", 5): (92.88, 0.07), ("cifar10", 10): (92.89, 0.06),
    ("cifar100", 1): (64.22, 0.17), ("cifar100", 5): (68.16, 0.20), ("cifar100", 10): (68.86, 0.03),
}


@dataclass(frozen=True)
class Run:
    """One cell of a grid."""

    dataset: str
    shots: int
    seed: int
    method: str
    teacher: str = "vgg16"
    teacher_seed: int = 0  # which training of the teacher's recipe (0: the book's teacher)

    @property
    def label(self) -> str:
        t = f"{self.teacher}" + (f" (teacher seed {self.teacher_seed})" if self.teacher_seed else "")
        return f"{t} {self.dataset} N={self.shots} seed={self.seed} {self.method}"


def _ints(values, what: str) -> tuple[int, ...]:
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"{what} must be a non-empty list of whole numbers >= 0, got {values!r}")
    return values


@dataclass(frozen=True)
class Cross:
    """Every combination of these data sets, shot counts, seeds and methods."""

    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...] = COMPARISON
    teacher: str = "vgg16"
    teacher_seed: int = 0

    def __post_init__(self):
        as_tuple = (lambda v: (v,) if isinstance(v, str) else tuple(v))
        object.__setattr__(self, "datasets", tuple(check_dataset(d) for d in as_tuple(self.datasets)))
        object.__setattr__(self, "shots", _ints(self.shots, "shots"))
        object.__setattr__(self, "seeds", _ints(self.seeds, "seeds"))
        object.__setattr__(self, "methods", as_tuple(self.methods))
        object.__setattr__(self, "teacher", as_teacher(self.teacher))
        if 0 in self.shots:
            raise ValueError("shots must be >= 1 (images per class)")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or not self.datasets:
            raise ValueError(f"unknown or missing methods {unknown or self.methods!r}; "
                             f"choose from {', '.join(METHODS)}")
        for d in self.datasets:
            check_teacher(self.teacher, d)
        check_teacher_seed(self.teacher_seed, self.teacher)

    def runs(self) -> list[Run]:
        cells = itertools.product(self.datasets, self.shots, self.seeds, self.methods)
        return [Run(d, n, s, m, self.teacher, self.teacher_seed) for d, n, s, m in cells]


@dataclass(frozen=True)
class Grid:
    """A union of crosses, run in order; a run listed twice runs once."""

    crosses: tuple[Cross, ...] = field(default_factory=tuple)

    def runs(self) -> list[Run]:
        return list(dict.fromkeys(r for c in self.crosses for r in c.runs()))

    def restrict(self, datasets: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
                 shots: Iterable[int] | None = None) -> Grid:
        """The same grid on only these data sets, seeds and/or shot counts (None keeps all)."""
        if isinstance(datasets, str):
            datasets = [datasets]
        keep_d = None if datasets is None else {check_dataset(d) for d in datasets}
        keep_s = None if seeds is None else set(_ints(seeds, "seeds"))
        keep_n = None if shots is None else set(_ints(shots, "shots"))
        out = []
        for c in self.crosses:
            ds = tuple(d for d in c.datasets if keep_d is None or d in keep_d)
            ss = tuple(s for s in c.seeds if keep_s is None or s in keep_s)
            ns = tuple(n for n in c.shots if keep_n is None or n in keep_n)
            if ds and ss and ns:
                out.append(Cross(ds, ns, ss, c.methods, c.teacher, c.teacher_seed))
        if not out:
            raise ValueError(f"no run of the grid is left on data sets {datasets!r}, seeds {seeds!r} and shots "
                             f"{shots!r}")
        return Grid(tuple(out))

    @classmethod
    def from_spec(cls, spec: Mapping | Iterable[Mapping]) -> Grid:
        """From {"datasets", "shots", "seeds", "methods"} (or a list of such dicts, one per cross)."""
        specs = [spec] if isinstance(spec, Mapping) else list(spec)
        try:
            return cls(tuple(Cross(**s) for s in specs))
        except TypeError as err:
            raise ValueError("a grid is given as dicts with keys datasets, shots, seeds, methods (and optionally "
                             f"teacher, teacher_seed) ({err})") from None


SEEDS = (0, 1, 2)
PAPER_SHOTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50)
# The methods table (the chapter "NetGraft among few-shot compression methods"): the field's methods beside both
# NetGraft recipes and the inherited KD baseline, three seeds each.
FIELD = Grid((Cross("cifar10", (1, 5, 10), SEEDS, COMPARED_WITH_FIELD),
              Cross("cifar100", (1, 10), SEEDS, COMPARED_WITH_FIELD),
              Cross("cifar10", (1, 10), SEEDS, COMPARED_WITH_FIELD, "resnet56")))


def robustness_grid(teacher_seeds=(0, 1)) -> Grid:
    """Claims checked on other trainings of the same teacher recipe (teacher seeds): CIFAR-10's ablations at N = 1
    and 10 and the methods table's CIFAR-10 rows, three draws each, on each teacher."""
    return Grid(tuple(Cross("cifar10", shots, SEEDS, methods, teacher_seed=t) for t in teacher_seeds
                      for shots, methods in (((1, 10), ABLATIONS), ((1, 5, 10), COMPARED_WITH_FIELD))))


ROBUSTNESS = robustness_grid()
# The full grid, for `--profile paper` on a GPU: every N on both data sets, ablations at 1 and 10 shots.
FULL = Grid((Cross(DATASETS, PAPER_SHOTS, SEEDS, COMPARISON), Cross(DATASETS, (1, 10), SEEDS, ABLATIONS),
             Cross("cifar10", (1, 5, 10), SEEDS, COMPARISON, "resnet56"), *FIELD.crosses))

# What the book runs by default for each profile. cpu, sized for 2 CPU cores, is chapter 5's fidelity table
# (every method at 1, 5 and 10 shots: the book's NetGraft, the paper's recipe and the students keeping the
# teacher's blocks with three seeds on both data sets, the from-random students with one) and the ablations with
# three seeds at 1 and 10 shots on CIFAR-10 (CIFAR-100's at 10 shots are ON_REQUEST on the CPU; `grid="full"` has
# both N on both data sets). tiny matches the grid the tests give the chapters, so the chapter re-reads their runs.
DEFAULT: dict[str, Grid] = {
    "paper": FULL,
    "cpu": Grid((
        Cross(DATASETS, (1, 5, 10), SEEDS, ("netgraft",)),
        Cross(DATASETS, (1, 5, 10), SEEDS, ("netgraft_paper", "kd_inherited", "scratch_inherited")),
        Cross(DATASETS, (1, 5, 10), (0,), ("kd", "scratch")),
        Cross("cifar10", (1, 10), SEEDS, ABLATIONS),
        # where a field method beats the book's recipe (CIFAR-100, N=1; chapter 9): the same recipe trained all at once
        Cross("cifar100", (1,), SEEDS, ("netgraft", "all_at_once")),
    )),
    "tiny": Grid((
        Cross(DATASETS, (1, 2), (0, 1), COMPARISON),
        Cross("cifar10", (1,), (0, 1), ABLATIONS),
    )),
}


# Runs of a profile's book grid that its machine runs only on request, to keep the fresh CPU book within its
# 180-minute budget: CIFAR-100's ablations at 10 shots (about 15 min of 2 cores). A GPU runs them by default; the
# CPU book reads them back whenever every one is cached (`nbgraft sweep --grid on_request`, or chapter 6's
# `cifar100_ablations=True`).
ON_REQUEST: dict[str, Grid] = {"cpu": Grid((Cross("cifar100", (10,), SEEDS, ABLATIONS),))}


def book_grid(profile="cpu", *, run_on_request: bool = False, data_root=None, output_root=None) -> Grid:
    """The profile's default grid, with its ON_REQUEST runs when `run_on_request` or when all of them are cached
    (reading finished runs back costs nothing)."""
    grid, extra = get_grid("default", profile), ON_REQUEST.get(get_profile(profile).name)
    if extra is None or not (run_on_request or is_cached(extra, profile, data_root=data_root,
                                                          output_root=output_root)):
        return grid
    return Grid(grid.crosses + extra.crosses)


def get_grid(grid: str | Grid | Mapping | Iterable[Mapping] = "default", profile="cpu") -> Grid:
    """"default" (the profile's book grid), "on_request" (the part of it its machine runs only on request),
    "full" (the paper's grid), "methods" (the methods table's), "robustness" (claims on a second teacher), a Grid,
    or its dict spec."""
    if isinstance(grid, Grid):
        return grid
    if isinstance(grid, str):
        if grid == "full":
            return FULL
        if grid == "methods":
            return FIELD
        if grid == "robustness":
            return ROBUSTNESS
        if grid == "on_request":
            name = get_profile(profile).name
            if name not in ON_REQUEST:
                raise ValueError(f"profile {name!r} runs its whole book grid by default: nothing is on request "
                                 f"there (only in {', '.join(ON_REQUEST)})")
            return ON_REQUEST[name]
        if grid == "default":
            name = get_profile(profile).name
            if name not in DEFAULT:
                raise ValueError(f"no default grid for profile {name!r}; pass grid='full' or a dict of "
                                 "datasets/shots/seeds/methods")
            return DEFAULT[name]
        raise ValueError(f"unknown grid {grid!r}; use 'default', 'on_request', 'full', 'methods', 'robustness', a "
                         "Grid or a dict of datasets/shots/seeds/methods")
    return Grid.from_spec(grid)


def is_cached(grid: str | Grid | Mapping | Iterable[Mapping], profile="cpu", *, data_root=None,
              output_root=None) -> bool:
    """Whether every run of `grid` is finished in the cache (found without training or loading a network): a
    chapter can then read an optional grid back for free."""
    for run in get_grid(grid, profile).runs():
        recipe, overrides, student = variant(run.method)
        if not run_entry(recipe, run.dataset, run.shots, run.seed, profile, teacher=run.teacher,
                         teacher_seed=run.teacher_seed, student=student, data_root=data_root, output_root=output_root,
                         **overrides).done:
            return False
    return True


def run_one(run: Run, profile="cpu", *, data_root=None, output_root=None, device=None,
            seeds_together: tuple[int, ...] = ()) -> dict:
    """The cached metrics of one run (trained first if the cache does not hold it).

    With `seeds_together` (grafting methods only), the unfinished ones among those seeds are trained
    in one batched run (same results as one by one) and cached together.
    """
    kw = {"data_root": data_root, "output_root": output_root, "device": device, "teacher": run.teacher,
          "teacher_seed": run.teacher_seed}
    if run.method in STUDENT_METHODS:
        return run_student(run.method, run.dataset, run.shots, run.seed, profile, **kw)
    recipe, overrides, student = variant(run.method)
    seeds = list(dict.fromkeys((run.seed, *seeds_together)))
    return graft_seeds(run.dataset, run.shots, seeds, profile, method=recipe, student=student, **kw, **overrides)[0]


KEY_COLUMNS = ["teacher", "teacher_seed", "dataset", "shots", "seed", "method", "profile", "overrides"]
RESULT_COLUMNS = ["test_accuracy", "test_agreement", "val_accuracy", "teacher_test_accuracy", "wall_s", "device",
                  "cache_key", "schedule"]


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def result_row(run: Run, metrics: dict, profile) -> dict:
    """One tidy row: the run, what differs from its recipe, the results, the whole schedule (JSON)."""
    overrides = dict(GRAFT_VARIANTS.get(run.method, {}))
    row = {"teacher": teacher_label(run.teacher), "teacher_seed": run.teacher_seed, "dataset": run.dataset,
           "shots": run.shots, "seed": run.seed, "method": run.method, "profile": get_profile(profile).name,
           "overrides": " ".join(f"{k}={_json(list(v) if isinstance(v, tuple) else v)}" for k, v in overrides.items())}
    row.update({c: metrics.get(c) for c in RESULT_COLUMNS})
    row["schedule"] = _json(metrics["schedule"])
    return row


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Rows in run order. Every column applies to every method, so the CSV has no blank numbers."""
    return pd.DataFrame(rows, columns=KEY_COLUMNS + RESULT_COLUMNS)


def work_units(runs: list[Run], batch_seeds: bool = True) -> list[list[Run]]:
    """The runs grouped as they train, in the order of each group's first run: with `batch_seeds`, the
    seeds of one grafting method at one (teacher, data set, N) together; every other run alone."""
    units: dict[tuple, list[Run]] = {}
    for r in runs:
        batched = batch_seeds and r.method not in STUDENT_METHODS
        key = (r.teacher, r.teacher_seed, r.dataset, r.shots, r.method) if batched else r
        units.setdefault(key, []).append(r)
    return list(units.values())


def run_sweep(grid: str | Grid | Mapping | Iterable[Mapping] = "default", profile="cpu", *, data_root=None,
              output_root=None, device=None, table_name: str = "06_sweep", batch_seeds: bool = True,
              on_run: Callable[[Run, dict], None] | None = None, executor: str = "local",
              address: str | None = None) -> pd.DataFrame:
    """Run (or read back) every run of `grid`; rewrite `<output_root>/tables/<table_name>.csv` after each.

    With `batch_seeds`, the seeds of one NetGraft variant at one (data set, N) train together the first
    time one of them is reached (the others are then read from the cache). `on_run(run, metrics)` is
    called after each run (progress hooks; the tests use it to interrupt). Returns the table.
    `executor="ray"` runs the same units as Ray tasks (`nbgraft.cluster`; `address` as `ray.init`'s).
    """
    if executor == "ray":
        from .cluster import run_sweep_ray

        return run_sweep_ray(grid, profile, address=address, data_root=data_root, output_root=output_root,
                             device=device, table_name=table_name, batch_seeds=batch_seeds, on_run=on_run)
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; use 'local' (in this process) or 'ray'")
    profile = get_profile(profile)
    runs = get_grid(grid, profile).runs()
    together = {r: tuple(r.seed for r in unit) for unit in work_units(runs, batch_seeds) if len(unit) > 1
                for r in unit}
    rows: list[dict] = []
    with progress(runs, desc=f"sweep ({profile.name})", leave=True) as bar:
        for run in bar:
            bar.set_postfix_str(run.label)
            metrics = run_one(run, profile, data_root=data_root, output_root=output_root, device=device,
                              seeds_together=together.get(run, ()))
            rows.append(result_row(run, metrics, profile))
            save_table(results_table(rows), table_name, output_root)
            if on_run is not None:
                on_run(run, metrics)
    return results_table(rows)


# --------------------------------------------------------------------------- summaries for the chapter
def summarise(table: pd.DataFrame, by=("dataset", "method", "shots")) -> pd.DataFrame:
    """Mean, std and count over seeds of test accuracy and teacher agreement, and mean wall time."""
    return (table.groupby(list(by), sort=True)
            .agg(accuracy_mean=("test_accuracy", "mean"), accuracy_std=("test_accuracy", "std"),
                 agreement_mean=("test_agreement", "mean"), agreement_std=("test_agreement", "std"),
                 seeds=("seed", "nunique"), teacher=("teacher_test_accuracy", "first"),
                 wall_s_mean=("wall_s", "mean"))
            .reset_index())


def graft_details(table: pd.DataFrame, output_root=None) -> pd.DataFrame:
    """Per NetGraft-variant run, what only grafting has: stage times and the adapter-folding check
    (largest |logit| difference on the test set between kept and folded adapters; same predictions?)."""
    base = Path(output_root if output_root is not None else default_output_root()) / "cache" / "netgraft"
    rows = []
    for r in table[table["method"].isin(ABLATIONS)].itertuples():
        m = json.loads((base / r.cache_key / "metrics.json").read_text())
        rows.append({"dataset": r.dataset, "shots": r.shots, "seed": r.seed, "method": r.method,
                     "block_stage_s": m["block_stage_s"], "net_stage_s": m["net_stage_s"],
                     "fold_max_abs_logit_diff": m["fold_max_abs_logit_diff"],
                     "fold_same_predictions": bool(m["fold_same_predictions"])})
    return pd.DataFrame(rows, columns=["dataset", "shots", "seed", "method", "block_stage_s", "net_stage_s",
                                       "fold_max_abs_logit_diff", "fold_same_predictions"])


def paired_differences(table: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Each variant minus its recipe on the same (data set, N, seed) draws: mean difference of test accuracy
    (points) with a 95% paired t-interval, whether the interval excludes zero, and the verdict at `margin`
    (nbgraft.runs.compare). Seeds where either one is missing are left out; with one seed there is no interval."""
    graft = table[table["method"].isin(ABLATIONS)]
    pairs = [(m, reference(m)) for m in dict.fromkeys(graft.method) if m != reference(m)]
    out = comparisons(graft, pairs, margin, by=("dataset", "shots"))
    out["resolved"] = (out.ci95_low > 0) | (out.ci95_high < 0)
    return out[["dataset", "shots", "method", "compared_with", "seeds", "difference_mean", "ci95_low", "ci95_high",
                "resolved", "verdict"]]


ROBUSTNESS_COLUMNS = ["comparison", "shots", "teacher_seed", "difference_mean", "ci95_low", "ci95_high", "verdict"]


def robustness_table(table: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """The paired comparisons of the robustness grid on CIFAR-10's VGG16, per N and teacher seed: each ablation
    against its recipe, each method of the methods table against `netgraft` (columns ROBUSTNESS_COLUMNS)."""
    runs = table[(table.dataset == "cifar10") & (table.teacher == "vgg16")]
    pairs = [*((m, reference(m)) for m in ABLATIONS if m != reference(m)),
             *((m, "netgraft") for m in COMPARED_WITH_FIELD if m != "netgraft")]
    out = comparisons(runs, list(dict.fromkeys(pairs)), margin, by=("teacher_seed", "shots"))
    return out.sort_values(["comparison", "shots", "teacher_seed"], kind="stable")[ROBUSTNESS_COLUMNS].reset_index(
        drop=True)


def robustness(profile="cpu", margin: float = MARGIN, *, grid="robustness", run: bool = False, data_root=None,
               output_root=None, device=None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(runs, robustness_table) of the robustness grid (or another with teacher seeds): trained first when `run`,
    else only read back when every run is in the cache already; None when not run and not all cached."""
    if not run and not is_cached(grid, profile, data_root=data_root, output_root=output_root):
        return None
    runs = run_sweep(grid, profile, data_root=data_root, output_root=output_root, device=device,
                     table_name="robustness_runs")
    return runs, robustness_table(runs, margin)


def held_verdicts(robust: pd.DataFrame) -> pd.DataFrame:
    """Per (comparison, N), the verdict on each teacher seed side by side and whether it is the same on all."""
    wide = robust.pivot_table(index=["comparison", "shots"], columns="teacher_seed", values="verdict", aggfunc="first")
    wide.columns = [f"teacher_seed_{t}" for t in wide.columns]
    wide["holds"] = wide.nunique(axis=1).eq(1) & wide.notna().all(axis=1)
    return wide.reset_index()


def ablation_summary(table: pd.DataFrame, details: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Every grafting variant at each (data set, N) where an ablation ran, in ABLATIONS order, with mean ± std
    over seeds, the paired difference to its recipe and its verdict at `margin` (see paired_differences) and the
    folding check.

    Only the seeds the variants ran on count for the recipes too: a variant is compared on the same draws."""
    graft = table[table["method"].isin(ABLATIONS)]
    variants = graft[~graft["method"].isin(GRAFT_METHODS)]
    where = variants[["dataset", "shots", "seed"]].drop_duplicates()
    out = summarise(graft.merge(where, on=["dataset", "shots", "seed"]))
    fold = (details.groupby(["dataset", "method", "shots"])
            .agg(fold_max_abs_logit_diff=("fold_max_abs_logit_diff", "max"),
                 fold_same_predictions=("fold_same_predictions", "all")).reset_index())
    out = out.merge(fold, on=["dataset", "method", "shots"], how="left")
    out = out.merge(paired_differences(table, margin).drop(columns="seeds"), on=["dataset", "shots", "method"],
                    how="left")
    out["order"] = out["method"].map(ABLATIONS.index)
    return out.sort_values(["dataset", "shots", "order"]).drop(columns="order").reset_index(drop=True)


def versus_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our NetGraft mean ± std beside the paper's quoted VGG16 numbers, where the paper reports that N."""
    ours = summarise(table[table["method"] == "netgraft"])
    rows = []
    for r in ours.itertuples():
        if (r.dataset, r.shots) in PAPER_VGG16:
            mean, std = PAPER_VGG16[(r.dataset, r.shots)]
            rows.append({"dataset": r.dataset, "shots": r.shots, "seeds": r.seeds, "ours_mean": r.accuracy_mean,
                         "ours_std": r.accuracy_std, "our_teacher": r.teacher,
                         "ours_below_teacher": r.teacher - r.accuracy_mean,
                         "paper_mean": mean, "paper_std": std, "paper_source": "quoted: Shen et al. AAAI 2021, VGG16"})
    return pd.DataFrame(rows, columns=["dataset", "shots", "seeds", "ours_mean", "ours_std", "our_teacher",
                                       "ours_below_teacher", "paper_mean", "paper_std", "paper_source"])


def second_teacher_note(held: pd.DataFrame | None, comparison: str, shots: int) -> str:
    """What the other teachers of a `held_verdicts` table say of one verdict, for the book's sentence about it:
    nothing when they did not run it, a short note when they agree, the other verdicts in bold when not."""
    row = None if held is None else held[(held.comparison == comparison) & (held.shots == shots)]
    if row is None or row.empty:
        return ""
    r = row.iloc[0]
    if r["holds"]:
        return " (the same on a second teacher)"
    others = [str(r[c]) for c in held.columns if c.startswith("teacher_seed_") and c != "teacher_seed_0"]
    return f" (**a second teacher says {', '.join(others)}**)"
