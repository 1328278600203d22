"""NetGraft runs, cached: several seeds trained together (each stored where a run of that seed alone would be),
the student before any grafting step, and a finished run's student read back."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import torch

from .. import data as D
from ..cache import DamagedEntry, Entry
from ..device import machine, pick_device
from ..evaluate import count_flops, count_params
from ..grafting.engine import train_seeds
from ..grafting.parts import export_student, folds_adapters, new_parts
from ..grafting.stacks import stack_name
from ..methods import check_method
from ..models import BlockNet, build, load_state, spec_from_dict
from ..profiles import get_profile
from .setting import Setting, _base_config, prepare, recipe_for, run_cache_entry, student_spec_for
from .teacher import check_teacher, teacher_spec_for

def graft_seeds(dataset: str, shots: int, seeds, profile="cpu", *, method: str = "netgraft", teacher: str = "vgg16",
                student: dict | None = None, data_root=None, output_root=None, device=None, stack: str = "auto",
                source: str = "real", teacher_seed: int = 0, **schedule_overrides) -> list[dict]:
    """NetGraft (`method` = its recipe: "netgraft", the book's, or "netgraft_paper") for several seeds,
    trained together; returns each seed's metrics, in order. `student`: options of the family's student
    (e.g. {"widths": ...}; None: the family's default student).

    Seeds already in the cache are read back; the others are trained in one run and each stored in the
    entry a run of that seed alone would use. `stack` picks how the students run ("auto", "loop" or
    "vmap", see nbgraft.grafting.stacks); it does not change the results. `source`: real images, or images made
    from the teacher alone (see `prepare` and nbgraft.inversion); `teacher_seed`, which training of the teacher."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    check_method(method, kind="graft")
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    teacher = check_teacher(teacher, dataset)
    sched = replace(recipe_for(profile, method, dataset, teacher, source), **schedule_overrides)
    s_spec = student_spec_for(teacher_spec_for(dataset, profile, teacher), student)
    kw = {"teacher": teacher, "data_root": data_root, "output_root": output_root, "device": device}
    settings = [prepare(dataset, shots, seed, profile, source=source, teacher_seed=teacher_seed, **kw)
                for seed in seeds]
    entries = [run_cache_entry(output_root, method, _base_config(s, method), sched, s_spec) for s in settings]
    todo = [k for k, e in enumerate(entries) if not e.done]
    if todo:
        with contextlib.ExitStack() as held:  # another process computing one of them: wait, then read it
            for k in sorted(todo, key=lambda k: entries[k].key):
                held.enter_context(entries[k].lock())
            todo = [k for k in todo if not entries[k].done]
            results = _train_together([settings[k] for k in todo], sched, s_spec, stack, method) if todo else []
            for k, (metrics, tensors) in zip(todo, results):
                entries[k].start()
                for name, obj in tensors.items():
                    entries[k].save_tensors(name, obj)
                entries[k].finish(metrics)
    return [e.metrics() for e in entries]


def run_netgraft(dataset: str, shots: int, seed: int = 0, profile="cpu", **kw) -> dict:
    """One seed of NetGraft (see graft_seeds); cached. Returns the metrics."""
    return graft_seeds(dataset, shots, [seed], profile, **kw)[0]


def untrained_student(dataset: str, shots: int, seed: int = 0, profile="cpu", *, method: str = "netgraft",
                      teacher: str = "vgg16", source: str = "real", data_root=None, output_root=None,
                      device=None, teacher_seed: int = 0) -> dict:
    """Scores of the student as `method`'s recipe starts it, before any grafting step (cached): what the
    grafting steps add is measured from here. A student started from the teacher keeps the channels most
    active on the N images (of `source`), so its starting point depends on them too."""
    profile = get_profile(profile)
    teacher = check_teacher(teacher, dataset)
    sched = profile.recipe(method, D.check_dataset(dataset), teacher)
    s = prepare(dataset, shots, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                device=device, source=source, teacher_seed=teacher_seed)
    s_spec = student_spec_for(s.teacher.spec)
    entry = Entry(output_root, "untrained", {**_base_config(s, method), "init": sched.init, "student": s_spec})
    if entry.done:
        return entry.metrics()
    parts = new_parts(s.teacher, s_spec, seed, sched.init, s.x)
    student = export_student(s.teacher, parts, folded=True)
    first = parts.first
    return entry.finish({"method": method, "shots": shots, "seed": seed, "image_source": source, "init": sched.init,
                         **s.scores_from(s.boundaries("val", first).student_logits(student),
                                         s.boundaries("test", first).student_logits(student))})


def _train_together(settings: list[Setting], sched, s_spec, stack: str, method: str) -> list[tuple[dict, dict]]:
    """Train the settings' seeds together; per seed (metrics, tensors to store)."""
    s0, S = settings[0], len(settings)
    teacher, seeds, shots = s0.teacher, [s.seed for s in settings], s0.shots
    t0 = time.perf_counter()
    parts = [new_parts(teacher, s_spec, s.seed, sched.init, s.x) for s in settings]
    init_s = time.perf_counter() - t0
    first = parts[0].first
    val_b, test_b = s0.boundaries("val", first), s0.boundaries("test", first)
    blocks, chains = [{} for _ in settings], [{} for _ in settings]

    def scores(stacked, a: int, b: int) -> list[dict]:
        v = val_b.hybrid_logits(stacked, teacher, a, b)
        if not sched.part_test_scores:  # a large teacher: parts on the validation pool only (see the schedule)
            return [s.scores_from(v[k], None) for k, s in enumerate(settings)]
        t = test_b.hybrid_logits(stacked, teacher, a, b)
        return [s.scores_from(v[k], t[k]) for k, s in enumerate(settings)]

    def after(stacked, a, b) -> None:
        if a is None:  # the block stage is over: each block alone in the teacher
            for i in stacked.positions:
                for k, sc in enumerate(scores(stacked, i, i)):
                    blocks[k][f"block{i + 1}"] = sc
        else:
            for k, sc in enumerate(scores(stacked, a, b)):
                chains[k][f"chain{a + 1}-{b + 1}"] = sc

    curves = [{} for _ in settings]

    def watch(stacked, epoch: int) -> None:  # each block alone in the teacher, on the validation pool
        for i in stacked.positions:
            v = val_b.hybrid_logits(stacked, teacher, i, i)
            for k, s in enumerate(settings):
                curves[k].setdefault(f"block{i + 1}", []).append([epoch, s.scores_from(v[k], None)["val_accuracy"]])

    trained, block_logs, net_logs = train_seeds(teacher, parts, torch.stack([s.x for s in settings]), sched, shots,
                                                seeds, stack, on_step=after, on_epoch=watch)
    train_wall = time.perf_counter() - t0
    students = [export_student(teacher, p, folded=True) for p in trained]
    static = {"teacher_params": count_params(teacher), "student_params": count_params(students[0]),
              "unfolded_params": count_params(export_student(teacher, trained[0], folded=False)),
              "teacher_flops": count_flops(teacher), "student_flops": count_flops(students[0])}
    out = []
    for k, (s, p, student) in enumerate(zip(settings, trained, students)):
        logits_f = test_b.student_logits(student)
        logits_u = (test_b.student_logits(export_student(teacher, p, folded=False)) if folds_adapters(p)
                    else logits_f)  # no adapter pair to fold: the same network, not scored twice
        out.append(({
            **_base_config(s, method), "profile": s.profile.name, "teacher_name": s.teacher_name,
            **s.scores_from(val_b.student_logits(student), logits_f),
            "teacher_test_accuracy": s.teacher_metrics["test_accuracy"],
            "teacher_val_accuracy": (s.teacher_val_pred == s.y_val).float().mean().item() * 100,
            "blocks": blocks[k], "chains": chains[k], "block_val_curves": curves[k],
            "block_losses": block_logs[k].losses, "net_losses": net_logs[k].losses,
            # Shared by the seeds trained together: each seed is charged an equal share.
            "init_s": init_s / S, "block_stage_s": block_logs[k].wall_s / S, "net_stage_s": net_logs[k].wall_s / S,
            "train_s": train_wall / S, "wall_s": (time.perf_counter() - t0) / S,
            "batched_seeds": seeds, "batched_wall_s": time.perf_counter() - t0,
            "fold_max_abs_logit_diff": (logits_f - logits_u).abs().max().item(),
            "fold_same_predictions": bool((logits_f.argmax(1) == logits_u.argmax(1)).all()),
            **static, "teacher_spec": teacher.spec, "student_spec": s_spec, "schedule": sched,
            "device": str(s.x.device), "torch_threads": torch.get_num_threads(), "machine": machine(s.x.device),
            "seed_stack": stack_name(s.x.device, stack), "data_source": s.data_source, "images": len(s.x),
            "image_source": s.image_source,
        }, {"parts.pt": p.state_dict(), "student.pt": student.state_dict()}))
    return out


def load_student(metrics: dict, output_root=None, device=None) -> BlockNet:
    """The folded student of a finished NetGraft run, rebuilt from its specs and weights. A damaged or missing
    checkpoint moves the run's entry aside (asking for the run again trains it anew) and says so."""
    entry = Entry.stored(output_root, "netgraft", metrics["cache_key"])
    t_spec, s_spec = spec_from_dict(metrics["teacher_spec"]), spec_from_dict(metrics["student_spec"])
    skeleton = new_parts(build(t_spec, init=False), s_spec, 0)
    student = export_student(build(t_spec, init=False), skeleton, folded=True)
    dev = pick_device(device)
    try:
        state = entry.load_tensors("student.pt")
    except DamagedEntry as err:
        if entry.dir.is_dir():
            entry.quarantine(str(err))
        raise DamagedEntry(f"{err}; run the chapter (or `nbgraft graft`) again to train this student anew") from None
    load_state(student, state, f"student checkpoint {entry.path('student.pt')}")
    return student.to(dev).eval()
