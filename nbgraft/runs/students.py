"""Runs of the methods that train a student network directly (the table's kind "student": the baselines,
and the field's few-shot methods), cached under the method's name."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from .. import data as D
from ..cache import Entry
from ..device import machine
from ..evaluate import count_params
from ..methods import check_method
from ..profiles import get_profile
from .setting import Setting, _base_config, prepare, recipe_for, run_cache_entry, student_spec_for
from .teacher import check_teacher

def run_student(method: str, dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16",
                student: dict | None = None, data_root=None, output_root=None, device=None, teacher_seed: int = 0,
                **schedule_overrides) -> dict:
    """A student method of the table (kind "student": the baselines, nbgraft.methods) on one N-shot draw;
    cached under the method's name. Returns the metrics."""
    m = check_method(method, kind="student")
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    teacher = check_teacher(teacher, dataset)
    sched = replace(recipe_for(profile, method, dataset, teacher), **schedule_overrides)
    s = prepare(dataset, shots, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                device=device, teacher_seed=teacher_seed)
    s_spec = student_spec_for(s.teacher.spec, student)
    entry = run_cache_entry(output_root, method, _base_config(s, method), sched, s_spec)
    if entry.done:
        return entry.metrics()
    with entry.lock():
        if entry.done:
            return entry.metrics()
        return _train(entry, m, s, s_spec, sched, seed)


def _train(entry: Entry, m, s: Setting, s_spec, sched, seed: int) -> dict:
    entry.start()
    t0 = time.perf_counter()
    model, log = m.train(s.teacher, s_spec, s.x, s.y, sched, seed)
    entry.save_tensors("student.pt", model.state_dict())
    scores = s.scores(model, log["first_trained_block"])
    return entry.finish({**_base_config(s, m.name), "profile": s.profile.name, "teacher_name": s.teacher_name,
                         **scores, **log, "train_s": log["wall_s"], "wall_s": time.perf_counter() - t0,
                         "teacher_test_accuracy": s.teacher_metrics["test_accuracy"], "schedule": sched,
                         "student_params": count_params(model), "teacher_spec": s.teacher.spec,
                         "student_spec": s_spec, "device": str(s.x.device), "torch_threads": torch.get_num_threads(),
                         "machine": machine(s.x.device), "images": len(s.x)})
