"""Cached experiments: one NetGraft run or one baseline run per (data set, N, seed, profile, options).

Each returns a flat metrics dict (test accuracy, agreement with the teacher, wall time, ...) and is
stored under `outputs/cache/<method>/<hash>/`; asking again for a finished config only reads JSON.
The test set is evaluated for the report at fixed points (end of each stage); nothing is chosen on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .baselines import train_baseline
from .cache import Entry, _plain, default_output_root
from .device import pick_device
from .evaluate import count_flops, count_params, predict, report
from .graft import GraftParts, Grafted, Student, export_student, graft_blocks, graft_net
from .models import BlockVGG, VGGSpec, student_spec
from .profiles import get_profile
from .teacher import get_teacher, spec_from_config, teacher_config, teacher_test_predictions

VAL_REPORT_SIZE = 1000  # validation images scored per run (a fixed class-balanced prefix of the pool)


@dataclass
class Setting:
    """Everything a run needs: the teacher and the tensors of its N-shot draw, val pool and test set."""

    dataset: str
    shots: int
    seed: int
    profile: object
    teacher: BlockVGG
    teacher_metrics: dict
    teacher_key: str
    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    teacher_test_pred: torch.Tensor
    teacher_val_pred: torch.Tensor
    data_source: str

    def scores(self, model: torch.nn.Module) -> dict:
        """Validation and test accuracy and test agreement with the teacher, in %."""
        test = report(model, self.x_test, self.y_test, self.teacher_test_pred)
        val = report(model, self.x_val, self.y_val, self.teacher_val_pred)
        return {"test_accuracy": test["accuracy"], "test_agreement": test["agreement"],
                "val_accuracy": val["accuracy"], "val_agreement": val["agreement"]}


def prepare(dataset: str, shots: int, seed: int = 0, profile="cpu", *, data_root=None, output_root=None,
            device=None) -> Setting:
    device = pick_device(device)
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    data = D.load_dataset(dataset, data_root)
    split = D.make_split(data, profile.val_per_class[dataset], shots, seed)  # validates N before training
    teacher, tm = get_teacher(dataset, profile, data_root=data_root, output_root=output_root, device=device)
    val = _balanced_prefix(data.y_train, split.val, VAL_REPORT_SIZE)
    x_test, y_test = D.test_arrays(data, profile.test_limit)
    x_val = D.to_tensor(data.x_train[val], dataset, device)
    return Setting(
        dataset, shots, seed, profile, teacher, tm, Entry(output_root, "teacher", teacher_config(dataset, profile)).key,
        D.to_tensor(data.x_train[split.few_shot], dataset, device), torch.from_numpy(data.y_train[split.few_shot]).to(device),
        x_val, torch.from_numpy(data.y_train[val]).to(device),
        D.to_tensor(x_test, dataset, device), torch.from_numpy(y_test).to(device),
        teacher_test_predictions(dataset, profile, output_root=output_root).to(device),
        predict(teacher, x_val).argmax(1), data.source,
    )


def _balanced_prefix(y: np.ndarray, pool: np.ndarray, size: int) -> np.ndarray:
    """At most `size` pool indices, the same number from each class, in a fixed order."""
    classes = np.unique(y[pool])
    per = max(1, size // len(classes))
    return np.sort(np.concatenate([pool[y[pool] == c][:per] for c in classes]))


def _base_config(s: Setting, method: str) -> dict:
    return {"method": method, "dataset": s.dataset, "shots": s.shots, "seed": s.seed, "teacher": s.teacher_key,
            "test_limit": s.profile.test_limit, "val_report_size": VAL_REPORT_SIZE}


def run_netgraft(dataset: str, shots: int, seed: int = 0, profile="cpu", *, student_widths=None, data_root=None,
                 output_root=None, device=None, **schedule_overrides) -> dict:
    """Block grafting, then progressive net grafting, then export; cached. Returns the metrics."""
    profile = get_profile(profile)
    sched = replace(profile.graft_for(D.check_dataset(dataset)), **schedule_overrides)
    t_spec = spec_from_config(teacher_config(dataset, profile))
    s_spec = student_spec(t_spec, tuple(student_widths) if student_widths else None)
    s = prepare(dataset, shots, seed, profile, data_root=data_root, output_root=output_root, device=device)
    entry = Entry(output_root, "netgraft", {**_base_config(s, "netgraft"), "schedule": sched,
                                            "student_widths": s_spec.widths})
    if entry.done:
        return entry.metrics()
    entry.start()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    parts = GraftParts.for_student(t_spec, s_spec).to(s.x.device)
    block_log = graft_blocks(s.teacher, parts, s.x, sched, shots, seed)
    blocks = {f"block{i + 1}": s.scores(Grafted(s.teacher, parts, i, i)) for i in parts.positions}
    chains = {}

    def after_step(a: int, b: int) -> None:
        chains[f"chain{a + 1}-{b + 1}"] = s.scores(Grafted(s.teacher, parts, a, b))

    net_log = graft_net(s.teacher, parts, s.x, sched, shots, seed, on_step=after_step)
    train_wall = time.perf_counter() - t0
    student = export_student(s.teacher, parts, s_spec, folded=True)
    unfolded = export_student(s.teacher, parts, s_spec, folded=False)
    logits_f, logits_u = predict(student, s.x_test), predict(unfolded, s.x_test)
    entry.save_tensors("parts.pt", parts.state_dict())
    entry.save_tensors("student.pt", student.state_dict())
    metrics = {
        **_base_config(s, "netgraft"), "profile": profile.name, **s.scores(student),
        "teacher_test_accuracy": s.teacher_metrics["test_accuracy"],
        "blocks": blocks, "chains": chains,
        "block_losses": block_log.losses, "net_losses": net_log.losses,
        "block_stage_s": block_log.wall_s, "net_stage_s": net_log.wall_s, "train_s": train_wall,
        "wall_s": time.perf_counter() - t0,
        "fold_max_abs_logit_diff": (logits_f - logits_u).abs().max().item(),
        "fold_same_predictions": bool((logits_f.argmax(1) == logits_u.argmax(1)).all()),
        "teacher_params": count_params(s.teacher), "student_params": count_params(student),
        "unfolded_params": count_params(unfolded),
        "teacher_flops": count_flops(s.teacher), "student_flops": count_flops(student),
        "teacher_spec": t_spec, "student_spec": s_spec, "schedule": sched,
        "device": str(s.x.device), "torch_threads": torch.get_num_threads(), "data_source": s.data_source,
        "images": len(s.x), "cache_key": entry.key,
    }
    return entry.finish(metrics)


def run_baseline(kind: str, dataset: str, shots: int, seed: int = 0, profile="cpu", *, data_root=None,
                 output_root=None, device=None, **schedule_overrides) -> dict:
    """The student from scratch on N-shot labels (`scratch`) or by logit KD on N-shot images (`kd`)."""
    profile = get_profile(profile)
    sched = replace(profile.baseline, **schedule_overrides)
    s = prepare(dataset, shots, seed, profile, data_root=data_root, output_root=output_root, device=device)
    s_spec = student_spec(s.teacher.spec)
    entry = Entry(output_root, kind, {**_base_config(s, kind), "schedule": sched, "student_widths": s_spec.widths})
    if entry.done:
        return entry.metrics()
    entry.start()
    model, log = train_baseline(kind, s_spec, s.x, s.y, sched, s.teacher, seed)
    entry.save_tensors("student.pt", model.state_dict())
    return entry.finish({**_base_config(s, kind), "profile": profile.name, **s.scores(model), **log,
                         "teacher_test_accuracy": s.teacher_metrics["test_accuracy"], "schedule": sched,
                         "device": str(s.x.device), "torch_threads": torch.get_num_threads(), "images": len(s.x)})


def load_student(metrics: dict, output_root=None, device=None) -> Student:
    """The folded student of a finished NetGraft run, rebuilt from its specs and weights."""
    entry_dir = Path(output_root if output_root is not None else default_output_root()) / "cache" / "netgraft" / metrics["cache_key"]
    t_spec, s_spec = (VGGSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in metrics[n].items()})
                      for n in ("teacher_spec", "student_spec"))
    student = Student(t_spec, s_spec, folded=True)
    state = torch.load(entry_dir / "student.pt", map_location=pick_device(device), weights_only=False)
    student.load_state_dict(state)
    return student.to(pick_device(device)).eval()


def cached_runs(method: str, output_root=None, *, profile=None, dataset: str | None = None) -> list[dict]:
    """Metrics of every finished run of `method` in the cache.

    With `profile` and `dataset`: only that data set's runs on the profile's own schedule (no
    ablation overrides, default student), so an old or a variant run never mixes into a curve.
    """
    base = Path(output_root if output_root is not None else default_output_root()) / "cache" / method
    runs = [json.loads(p.read_text()) for p in sorted(base.glob("*/metrics.json"))]
    if profile is None and dataset is None:
        return runs
    if profile is None or dataset is None:
        raise ValueError("give both profile and dataset, or neither")
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    sched = profile.graft_for(dataset) if method == "netgraft" else profile.baseline
    own = json.loads(json.dumps(_plain(sched)))
    widths = list(student_spec(spec_from_config(teacher_config(dataset, profile))).widths)
    return [m for m in runs if m.get("dataset") == dataset and m.get("profile") == profile.name
            and m.get("schedule") == own and m.get("student_spec", {}).get("widths", widths) == widths]


RESULT_COLUMNS = ["method", "dataset", "profile", "shots", "seed", "test_accuracy", "test_agreement", "val_accuracy",
                  "teacher_test_accuracy", "wall_s"]


def results_frame(output_root=None, methods=("netgraft", "scratch", "kd"), profile=None):
    """One row per finished run in the cache (the columns of RESULT_COLUMNS); with `profile`, only
    runs on that profile's own schedules (see cached_runs)."""
    if profile is None:
        runs = [m for method in methods for m in cached_runs(method, output_root)]
    else:
        runs = [m for method in methods for ds in D.DATASETS
                for m in cached_runs(method, output_root, profile=profile, dataset=ds)]
    return runs_frame(runs)


def runs_frame(runs: list[dict]):
    """One row per run's metrics: method, data set, N, seed, accuracies (%), wall time (s)."""
    import pandas as pd

    return pd.DataFrame([{c: m.get(c) for c in RESULT_COLUMNS} for m in runs], columns=RESULT_COLUMNS)
