"""How each method's recipe was chosen: the same small grid for every method, scored on the validation pool.

Every method (both NetGraft recipes, the baselines and the field's methods) gets the same grid: its profile
recipe with all learning rates scaled by 1/3, 1 or 3 and its length (epochs or steps) halved, kept or
doubled, nine configurations, each run at 1 and 10 shots on the first seed, grown past any edge its choice
lies on (`extend`). The configuration with the best mean validation accuracy (or the shortest within half a
point of it) is the one the profile should hold: the x1 / x1 point when the profile is up to date. The test
set is never read here. Runs are cached like any other, and the table is rewritten after each, so an
interrupted tuning resumes. The table is also the record a tuning resumes from: a grid point it already lists
for the same recipe is read back, not run again, even where the cache is gone (a fresh checkout). Each profile
has its own table (`table_for`).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from itertools import product

import numpy as np
import pandas as pd

from .experiments import run_method
from .teacher import check_teacher, teacher_label
from ..cache import config_hash
from ..plots import save_table, table_path
from ..methods import METHODS
from ..profiles import get_profile
from ..training import progress

LR_SCALES = (1 / 3, 1.0, 3.0)
LENGTHS = (0.5, 1.0, 2.0)
SHOTS = (1, 10)
# A method without gradient steps (FSKD) has its ridge for a learning rate and its views per image for a length.
_LR_FIELDS = ("block_lr", "block_adapter_lr", "net_lr", "net_adapter_lr", "lr", "ridge")
_LENGTH_FIELDS = ("block_epochs", "net_epochs", "steps", "copies")


def _scaled(value, factor: float, whole: bool):
    if isinstance(value, tuple):
        return tuple(_scaled(v, factor, whole) for v in value)
    if not whole:
        return value * factor
    return max(1, round(value * factor)) if value else 0  # a stage the recipe skips stays skipped


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
    if hasattr(sched, "ridge"):
        return {"lr_value": get("ridge"), "length_value": f"{get('copies')} views per image"}
    return {"lr_value": get("block_lr")[0],
            "length_value": f"{'/'.join(map(str, get('block_epochs')))} + {'/'.join(map(str, get('net_epochs')))} epochs"}


def run_tuning(methods=METHODS, dataset: str = "cifar10", profile="cpu", *, teacher: str = "vgg16", seed: int = 0,
               shots=SHOTS, extend: bool = True, extensions: int | None = None, data_root=None, output_root=None,
               device=None, table_name: str | None = None) -> pd.DataFrame:
    """Every method x grid point x N; returns (and writes) the table with one row per run and the choice.

    With `extend`, a method whose choice lies on the edge of its grid (its lowest or highest learning rate,
    its longest length, or its shortest one above MIN_LENGTH) gets the next row or column (x1/3 or x3, x1/2 or
    x2), until its choice is inside the grid or `extensions` rounds (default MAX_EXTENSIONS) were added: fewer
    where each round costs more than the machine has (a longer round doubles the longest runs). Rows of the table
    already written for other methods, data sets or teachers are kept."""
    extensions = MAX_EXTENSIONS if extensions is None else extensions
    if extensions < 0:
        raise ValueError(f"extensions={extensions}: give the number of rounds of grid growth, 0 or more")
    profile, label = get_profile(profile), teacher_label(check_teacher(teacher, dataset))
    table_name = table_name or table_for(profile)
    path = table_path(table_name, output_root)
    before = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    before = before[[c for c in before.columns if c not in ("val_accuracy_mean_over_n", "chosen")]]
    rows: list[dict] = []

    def merged() -> pd.DataFrame:
        """The table so far: a method's earlier rows for this data set and teacher give way to its new ones only
        once it has some (an interrupted tuning loses no method's rows)."""
        new = {r["method"] for r in rows}
        if not len(before):
            return _ordered(pd.DataFrame(rows))
        old = before[~(before["method"].isin(new) & (before["dataset"] == dataset) & (before["teacher"] == label))]
        return _ordered(pd.concat([old, pd.DataFrame(rows)], ignore_index=True))

    def run(method, lr, length, n):
        sched = profile.recipe(method, dataset, teacher)
        over = overrides(sched, lr, length)
        who = {"method": method, "teacher": label, "dataset": dataset, "shots": n, "seed": seed}
        point = {**_absolute(sched, over), "recipe": config_hash(asdict(replace(sched, **over)))}
        m = _recorded(before, who, point)
        if m is None:
            m = run_method(method, dataset, n, seed, profile, teacher=teacher, data_root=data_root,
                           output_root=output_root, device=device, **over)
        rows.append({**who, "lr_scale": round(lr, 4), "length": length, **point,
                     "val_accuracy": m["val_accuracy"], "wall_s": m["wall_s"]})
        save_table(merged(), table_name, output_root)

    bar = progress(desc="tuning", leave=True)
    for method in methods:
        lrs, lengths, done = list(LR_SCALES), list(LENGTHS), set()
        for _ in range(extensions + 1):
            for lr, length, n in product(lrs, lengths, shots):
                if (lr, length, n) not in done:
                    run(method, lr, length, n)
                    done.add((lr, length, n))
                    bar.update()
            if not extend or not _extend(lrs, lengths, choices(pd.DataFrame(rows)), method):
                break
    bar.close()
    return choices(merged())


def _recorded(table: pd.DataFrame, who: dict, point: dict) -> dict | None:
    """The result the table already holds for this grid point (same method, setting, N, seed, rate, length and
    recipe fingerprint), or None. Rows written before the table kept a fingerprint match on rate and length: their
    recipes' other fields were the profile's then, as now."""
    if not len(table):
        return None
    same = np.ones(len(table), dtype=bool)
    for k, v in who.items():
        same &= (table[k] == v).to_numpy()
    same &= (table["length_value"] == point["length_value"]).to_numpy()
    same &= _same_rate(table["lr_value"], point["lr_value"])
    if "recipe" in table.columns:
        same &= (table["recipe"].isna() | (table["recipe"] == point["recipe"])).to_numpy()
    hit = table[same]
    return None if hit.empty else {"val_accuracy": hit["val_accuracy"].iloc[-1], "wall_s": hit["wall_s"].iloc[-1]}


MAX_EXTENSIONS = 3  # rounds of grid growth per method
MIN_LENGTH = 0.25  # the grid never asks for less than a quarter of the recipe's length


def _extend(lrs: list, lengths: list, table: pd.DataFrame, method: str) -> bool:
    """Grow the grid (in place) past the edge its choice lies on; whether it grew."""
    win = table[(table.method == method) & table.chosen].iloc[0]
    lr = min(lrs, key=lambda v: abs(round(v, 4) - win.lr_scale))
    grew = False
    if lr == lrs[0]:
        lrs.insert(0, lr / 3)
        grew = True
    elif lr == lrs[-1]:
        lrs.append(lr * 3)
        grew = True
    if win.length == lengths[-1]:
        lengths.append(lengths[-1] * 2)
        grew = True
    elif win.length == lengths[0] and lengths[0] / 2 >= MIN_LENGTH:
        lengths.insert(0, lengths[0] / 2)
        grew = True
    return grew


def profile_point(profile, method: str, dataset: str, teacher: str) -> dict:
    """The profile's current recipe of `method` in the grid's plain numbers (main learning rate, length), to tell
    whether a grid's winner is what the profile holds."""
    return _absolute(get_profile(profile).recipe(method, dataset, teacher), {})


def profile_holds(profile, row) -> bool:
    """Whether the profile's recipe is the grid point `row` (a `choices` row: its main learning rate and length)."""
    now = profile_point(profile, row.method, row.dataset, row.teacher)
    return now["length_value"] == row.length_value and bool(_same_rate(row.lr_value, now["lr_value"]))


def _same_rate(values, rate: float):
    """Whether learning rates (a column of the table, which writes them with 4 significant digits) are `rate`."""
    return np.isclose(np.asarray(values, dtype=float), rate, rtol=1e-3, atol=0)


def table_for(profile) -> str:
    """The name of a profile's tuning table: `tuning` for the CPU book's profile, `tuning_<profile>` for any other,
    so that tuning another profile (on a GPU, say) neither mixes with nor overwrites the CPU book's choices."""
    name = get_profile(profile).name
    return "tuning" if name == "cpu" else f"tuning_{name}"


def tuned_recipes(profile, output_root=None, table_name: str | None = None) -> dict:
    """{(method, teacher, data set): the edges of its grid its choice lies on ("" inside)} for every grid choice of
    the tuning table that `profile` holds: the recipes tuned on their own setting's validation pool ({} before any
    tuning)."""
    _, won, edges = _winners(profile, output_root, table_name)
    return {(r.method, r.teacher, r.dataset): edges[(r.teacher, r.dataset, r.method)] for r in won.itertuples()
            if profile_holds(profile, r)}


def _winners(profile, output_root, table_name):
    """A profile's tuning table with its choices, one winner row per (teacher, data set, method), and each winner's
    edges by (teacher, data set, method); all empty before any tuning."""
    path = table_path(table_name or table_for(profile), output_root)
    grid = choices(pd.read_csv(path)) if path.is_file() else pd.DataFrame(columns=["teacher", "dataset", "method",
                                                                                   "chosen"])
    edges = on_edge(grid).set_index(["teacher", "dataset", "method"])["edges"] if len(grid) else {}
    return grid, grid[grid.chosen.astype(bool)].drop_duplicates(["teacher", "dataset", "method"]), edges


def behind(profile, output_root=None, table_name: str | None = None) -> pd.DataFrame:
    """One row per grid choice the profile does not hold (it keeps another point, most often a shorter one the CPU
    book's budget allows): the method and setting, the profile's point and the grid's choice in plain numbers with
    their pool accuracies (the profile's NaN where the grid never ran it), and the edges the choice lies on. What
    the book must say beside every number of such a method (empty before any tuning)."""
    columns = ["method", "teacher", "dataset", "held_lr", "held_length", "held_val_accuracy", "chosen_lr",
               "chosen_length", "chosen_val_accuracy", "edges"]
    grid, won, edges = _winners(profile, output_root, table_name)
    profile, rows = get_profile(profile), []
    for r in won.itertuples():
        if profile_holds(profile, r):
            continue
        now = profile_point(profile, r.method, r.dataset, r.teacher)
        g = grid[(grid.teacher == r.teacher) & (grid.dataset == r.dataset) & (grid.method == r.method)
                 & (grid.length_value == now["length_value"])
                 & _same_rate(grid.lr_value, now["lr_value"])]
        rows.append({"method": r.method, "teacher": r.teacher, "dataset": r.dataset, "held_lr": now["lr_value"],
                     "held_length": now["length_value"],
                     "held_val_accuracy": g.val_accuracy_mean_over_n.iloc[0] if len(g) else float("nan"),
                     "chosen_lr": r.lr_value, "chosen_length": r.length_value,
                     "chosen_val_accuracy": r.val_accuracy_mean_over_n,
                     "edges": edges[(r.teacher, r.dataset, r.method)]})
    return pd.DataFrame(rows, columns=columns)


TIE_POINTS = 0.5  # within this many points of the best, the shortest configuration wins (less than the
# standard error of an accuracy on the 1,000 validation images, about 1 point)


def choices(table: pd.DataFrame) -> pd.DataFrame:
    """The table with, per (teacher, data set, method), the mean validation accuracy over N of each grid point
    and which won: the best mean, or the shortest configuration within TIE_POINTS of it (then the best among
    those). A point not yet run at every N of its method's grid (an interrupted tuning) cannot win."""
    who = [c for c in ("teacher", "dataset") if c in table.columns] + ["method"]
    point = [*who, "lr_scale", "length"]
    table = table.drop(columns=[c for c in ("val_accuracy_mean_over_n", "chosen") if c in table.columns])
    stats = table.groupby(point).agg(val_accuracy_mean_over_n=("val_accuracy", "mean"),
                                     n=("shots", "nunique")).reset_index()
    mean = stats.drop(columns="n")
    whole = stats[stats["n"] == stats.groupby(who)["n"].transform("max")]
    top = whole.groupby(who)["val_accuracy_mean_over_n"].transform("max")
    near = whole[whole["val_accuracy_mean_over_n"] >= top - TIE_POINTS]
    shortest = near[near["length"] == near.groupby(who)["length"].transform("min")]
    best = shortest.loc[shortest.groupby(who)["val_accuracy_mean_over_n"].idxmax(), point]
    best["chosen"] = True
    out = table.merge(mean, on=point).merge(best, on=point, how="left")
    out["chosen"] = out["chosen"].fillna(False).astype(bool)
    return _ordered(out)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by setting, method (in the book's order), rate, length and N: a re-tuned method's rows stay in place."""
    order = {m: k for k, m in enumerate(METHODS)}
    by = [c for c in ("teacher", "dataset", "method", "lr_scale", "length", "shots") if c in table.columns]
    return table.sort_values(by, key=lambda c: c.map(order) if c.name == "method" else c).reset_index(drop=True)


def on_edge(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (teacher, data set, method) of a `choices` table: its choice, its mean validation accuracy, and
    the edges of its grid that choice lies on ("lowest rate", "highest rate", "longest", "shortest": a better point
    may lie beyond); on the longest edge also what the last doubling of length gained at the chosen rate (points),
    the pace at which a longer grid would go on paying."""
    who = [c for c in ("teacher", "dataset") if c in table.columns] + ["method"]
    rows = []
    for key, g in table.groupby(who, sort=False):
        win = g[g.chosen].iloc[0]
        row, col = g[g.length == win.length], g[g.lr_scale == win.lr_scale]  # the rates and lengths tried beside it
        edges = [name for name, hit in (
            ("lowest rate", win.lr_scale == row.lr_scale.min()), ("highest rate", win.lr_scale == row.lr_scale.max()),
            ("longest", win.length == col.length.max()),
            ("shortest", win.length == col.length.min() and col.length.min() / 2 >= MIN_LENGTH)) if hit]
        half = g[(g.lr_scale == win.lr_scale) & (g.length == win.length / 2)].val_accuracy_mean_over_n
        gain = win.val_accuracy_mean_over_n - half.iloc[0] if "longest" in edges and len(half) else float("nan")
        rows.append({**dict(zip(who, key if isinstance(key, tuple) else (key,))), "lr_scale": win.lr_scale,
                     "length": win.length, "val_accuracy": win.val_accuracy_mean_over_n, "edges": ", ".join(edges),
                     "last_doubling_gain": gain})
    return pd.DataFrame(rows)
