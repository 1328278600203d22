"""Students that are faster, not only smaller: the ResNet family's student shapes side by side, each grafted by the
same recipe, with their accuracy and their measured CPU speed-up over the teacher (`outputs/tables/speed.csv`).

Thinning the blocks inside one stage saves parameters but little time (a CIFAR ResNet's stages cost about the same
MACs each, and small convolutions are bound by memory traffic); dropping whole residual blocks saves time in
proportion (a residual network keeps working with a block removed, and which blocks go is chosen on the few-shot
images: `nbgraft.models.resnet.kept_blocks`). Speed-ups are medians of repeated timings on the machine that runs
this, teacher and student timed in alternation so that a drift of the machine's speed hits both, the teacher with
its BatchNorms folded as the students' are, and cached per student run and CPU.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..cache import cached
from ..device import machine
from ..evaluate import count_flops, count_params, cpu_latency_ms
from .netgraft import graft_seeds, load_student
from .setting import run_entry

# name -> options of the ResNet family's student (nbgraft.models.resnet.student_spec); the first is the book's. "Keeps
# a/b/c" = residual blocks kept in stages 1/2/3 of the teacher's 9/9/9 (`unit_blocks`: per unit of three blocks).
STUDENTS = {
    "width: stage 3 inside 28/64": {},
    "thin: every stage inside 1/2": {"mids": [8, 16, 32]},
    "drop: keeps 6/6/6 blocks": {"unit_blocks": [2, 2, 2]},
    "drop 6/6/6 + width": {"unit_blocks": [2, 2, 2], "mids": [16, 32, 28]},
    "drop: keeps 6/6/9 blocks": {"unit_blocks": [2, 2, 3]},
    "drop: keeps 3/9/9 blocks": {"unit_blocks": [1, 3, 3]},
    "drop: keeps 3/6/9 blocks": {"unit_blocks": [1, 2, 3]},
}
COLUMNS = ["teacher", "student", "shots", "seeds", "accuracy_mean", "accuracy_std", "teacher_accuracy",
           "params_ratio", "macs_ratio", "cpu_speedup_b1", "cpu_speedup_b128"]


def speed_runs(students: dict = STUDENTS, shots=(1, 10), seeds=(0, 1, 2), profile="cpu", *, teacher="resnet56",
               method: str = "netgraft", **kw) -> list[dict]:
    """Every student x N x seed grafted by `method`'s recipe (seeds trained together, cached); each run's metrics
    with the student's name under "student"."""
    runs = []
    for name, options in students.items():
        for n in shots:
            for m in graft_seeds("cifar10", n, seeds, profile, method=method, teacher=teacher,
                                 student=options or None, **kw):
                runs.append({**m, "student": name})
    return runs


def speed_cached(students: dict = STUDENTS, shots=(1, 10), seeds=(0, 1, 2), profile="cpu", *, teacher="resnet56",
                 method: str = "netgraft", data_root=None, output_root=None, device=None) -> bool:
    """Whether every run of `speed_runs` is in the cache (found without training or loading a network)."""
    return all(run_entry(method, "cifar10", n, seed, profile, teacher=teacher, student=options or None,
                         data_root=data_root, output_root=output_root).done
               for options in students.values() for n in shots for seed in seeds)


def cpu_speedup(teacher: torch.nn.Module, student: torch.nn.Module, batch_size: int, rounds: int = 5,
                repeats: int = 5) -> float:
    """Median over `rounds` of the teacher's median forward time over the student's (`cpu_latency_ms`: one CPU,
    this process's threads, warmed up first), the two timed in alternation within each round."""
    ratios = sorted(cpu_latency_ms(teacher, batch_size, repeats) / cpu_latency_ms(student, batch_size, repeats)
                    for _ in range(rounds))
    return ratios[len(ratios) // 2]


def speed_table(runs: list[dict], teacher: torch.nn.Module, output_root=None, rounds: int = 5) -> pd.DataFrame:
    """speed.csv's rows: per student and N, accuracy over seeds, and per student its size, MACs and measured CPU
    speed-ups over `teacher` at batch 1 and 128 (its folded student of the first run; every seed has the same
    architecture). The teacher is timed with its BatchNorms folded into its convs (`cpu_latency_ms`), as the
    BN-free students are: folding alone, free to anyone, makes the ResNet-56 about 1.1x faster on a CPU."""
    df = pd.DataFrame(runs)
    measured = {}
    for name, first in df.groupby("student", sort=False).head(1).set_index("student").iterrows():
        def measure(first=first) -> dict:
            student = load_student(first.to_dict(), output_root, device="cpu")
            return {"params_ratio": count_params(student) / count_params(teacher),
                    "macs_ratio": count_flops(student) / count_flops(teacher),
                    "cpu_speedup_b1": cpu_speedup(teacher, student, 1, rounds, repeats=20),
                    "cpu_speedup_b128": cpu_speedup(teacher, student, 128, rounds)}

        # timed once per student and CPU (a cached re-run of the book reads the timings back)
        m = cached("speed_timing", {"student_run": first.cache_key, "teacher": first.teacher, "rounds": rounds,
                                    "teacher_bn": "folded", "machine": machine("cpu")}, measure, output_root)
        measured[name] = {k: m[k] for k in ("params_ratio", "macs_ratio", "cpu_speedup_b1", "cpu_speedup_b128")}
    rows = []
    for (name, n), g in df.groupby(["student", "shots"], sort=False):
        rows.append({"teacher": g.teacher_name.iloc[0],
                     "student": name, "shots": n, "seeds": g.seed.nunique(),
                     "accuracy_mean": g.test_accuracy.mean(), "accuracy_std": g.test_accuracy.std(),
                     "teacher_accuracy": g.teacher_test_accuracy.iloc[0], **measured[name]})
    return pd.DataFrame(rows, columns=COLUMNS)
