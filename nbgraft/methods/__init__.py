"""The methods the book compares, in one table: a name's kind, label, how it trains and whose recipe it reads.
The CLI's choices, the reports' labels, the sweeps and the cache all read METHODS; adding a method is one
module here (a `train` function) and one entry below, plus its recipe in nbgraft.profiles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import baselines
from .fskd import train_fskd
from .mir import train_mir
from .pruned import train_pruned_kd


@dataclass(frozen=True)
class Method:
    """One method of the book.

    kind: "graft", a NetGraft recipe (trained by nbgraft.grafting, run by nbgraft.runs.experiments.graft_seeds,
        cached under "netgraft"); or "student", a student network trained by `train(teacher, student_spec, x, y,
        schedule, seed) -> (model in eval mode, log)` (run by nbgraft.runs.experiments.run_student, cached
        under its own name). A log's "first_trained_block" says which blocks are the teacher's, kept.
    label: how tables and figures name it.
    recipe: the profile recipe it trains with (default: its own name).
    files: the checkpoints its cache entry holds.
    group: "book" (the NetGraft recipes and the baselines every chapter compares) or "field" (the few-shot
        compression methods of the literature, run on the book's teacher-initialised student: the methods
        chapter).
    """

    name: str
    kind: str
    label: str
    train: Callable | None = None
    recipe: str | None = None
    files: tuple[str, ...] = ("student.pt",)
    group: str = "book"

    @property
    def cache_kind(self) -> str:
        return "netgraft" if self.kind == "graft" else self.name

    @property
    def recipe_name(self) -> str:
        return self.recipe or self.name


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("netgraft", "graft", "NetGraft (book recipe)", files=("parts.pt", "student.pt")),
    Method("netgraft_paper", "graft", "NetGraft (paper recipe)", files=("parts.pt", "student.pt")),
    Method("kd", "student", "KD, from random", partial(baselines.train_baseline, labels=False, inherited=False)),
    Method("scratch", "student", "labels, from random",
           partial(baselines.train_baseline, labels=True, inherited=False)),
    Method("kd_inherited", "student", "KD, teacher's blocks 1..k kept",
           partial(baselines.train_baseline, labels=False, inherited=True)),
    Method("scratch_inherited", "student", "labels, teacher's blocks kept",
           partial(baselines.train_baseline, labels=True, inherited=True)),
    Method("pruned_kd", "student", "pruned + KD", train_pruned_kd, group="field"),
    Method("fskd", "student", "FSKD (least squares, no SGD)", train_fskd, group="field"),
    Method("mir", "student", "MiR (features, teacher's classifier)", train_mir, group="field"),
)}
GRAFT_METHODS = tuple(n for n, m in METHODS.items() if m.kind == "graft")
BASELINE_METHODS = tuple(n for n, m in METHODS.items() if m.kind == "student" and m.group == "book")
STUDENT_METHODS = tuple(n for n, m in METHODS.items() if m.kind == "student")
BOOK_METHODS = tuple(n for n, m in METHODS.items() if m.group == "book")  # what chapters 2-6 compare
FIELD_METHODS = tuple(n for n, m in METHODS.items() if m.group == "field")
# The methods table (nbgraft.runs.compare): the field's methods beside both NetGraft recipes and the strongest
# baseline, all on the same draws.
COMPARED_WITH_FIELD = ("netgraft", "netgraft_paper", "kd_inherited", *FIELD_METHODS)
LABELS = {**{n: m.label for n, m in METHODS.items()}, "teacher": "teacher"}


def check_method(name: str, kind: str | None = None) -> Method:
    """The method called `name` (of `kind`, if given); a clear error naming the choices otherwise."""
    choices = [n for n, m in METHODS.items() if kind is None or m.kind == kind]
    if name not in choices:
        what = {"graft": "grafting recipe", "student": "baseline"}.get(kind, "method")
        raise ValueError(f"unknown {what} {name!r}; use one of {', '.join(choices)}")
    return METHODS[name]
