"""Cached experiments: NetGraft runs (batched over seeds) and baseline runs per (teacher, data set, N, seed).

Each returns a flat metrics dict (test accuracy, agreement with the teacher, wall time, ...) and is
stored under `outputs/cache/<method>/<hash>/`; asking again for a finished config only reads JSON.
The test set is evaluated for the report at fixed points (end of each stage); nothing is chosen on it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .baselines import check_kind, train_baseline
from .batched import SharedBoundaries, stack_name, train_seeds
from .cache import DamagedEntry, Entry, _plain, check_metrics, default_output_root, warn
from .device import machine, pick_device
from .evaluate import count_flops, count_params, predict
from .graft import GraftParts, export_student, folds_adapters
from .inversion import check_source, noise_images, synthetic_entry, synthetic_pool, take
from .models import BlockNet, build, family, load_state, spec_from_dict
from .models.inherit import inherit
from .profiles import BASELINE_METHODS, GRAFT_METHODS, METHODS, GraftSchedule, get_profile
from .teacher import (check_teacher, get_teacher, teacher_entry, teacher_spec_for, teacher_stamp,
                      teacher_test_predictions)

VAL_REPORT_SIZE = 1000  # validation images scored per run (a fixed class-balanced prefix of the pool)


@dataclass
class Setting:
    """Everything a run needs: the teacher and the tensors of its N-shot draw, val pool and test set."""

    dataset: str
    shots: int
    seed: int
    profile: object
    teacher_name: str
    teacher: BlockNet
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
    image_source: str = "real"  # what the N images per class are: see nbgraft.inversion.SOURCES
    image_key: str | None = None  # the synthetic pool's cache key
    teacher_stamp: tuple = ()  # which stored teacher this is (see nbgraft.teacher.teacher_stamp): keys the per-process memos

    def boundaries(self, split: str, first: int) -> SharedBoundaries:
        """The teacher's val or test activations from block `first` on (computed once per process)."""
        key = (self.teacher_stamp, split, first, str(self.x.device), len(self.x_test))
        if key not in _BOUNDARIES:
            if len(_BOUNDARIES) >= 4:
                _BOUNDARIES.pop(next(iter(_BOUNDARIES)))
            _BOUNDARIES[key] = SharedBoundaries(self.teacher, self.x_val if split == "val" else self.x_test, first)
        return _BOUNDARIES[key]

    def scores_from(self, val_logits: torch.Tensor, test_logits: torch.Tensor | None) -> dict:
        """Validation (and, given its logits, test) accuracy and agreement with the teacher, in %."""

        def pct(pred, ref):
            return (pred == ref).float().mean().item() * 100

        vp = val_logits.argmax(-1)
        out = {"val_accuracy": pct(vp, self.y_val), "val_agreement": pct(vp, self.teacher_val_pred)}
        if test_logits is not None:
            tp = test_logits.argmax(-1)
            out = {"test_accuracy": pct(tp, self.y_test), "test_agreement": pct(tp, self.teacher_test_pred), **out}
        return out

    def scores(self, model: torch.nn.Module, first: int = 0) -> dict:
        """Scores of a whole network; with `first`, one whose blocks before `first` are the teacher's."""
        if first:
            return self.scores_from(self.boundaries("val", first).student_logits(model),
                                    self.boundaries("test", first).student_logits(model))
        return self.scores_from(predict(model, self.x_val), predict(model, self.x_test))


_BOUNDARIES: dict[tuple, SharedBoundaries] = {}
# Per teacher: validation and test tensors with the teacher's predictions on them (see prepare).
_EVAL_TENSORS: dict[tuple, tuple[torch.Tensor, ...]] = {}


def prepare(dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16", data_root=None,
            output_root=None, device=None, source: str = "real") -> Setting:
    """The teacher and tensors of one run. `source`: the N images per class are the seed's real draw
    ("real"), the teacher's own synthetic images ("synthetic", no real image in training) or pixel noise."""
    device = pick_device(device)
    check_source(source)
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    check_teacher(teacher, dataset)
    data = D.load_dataset(dataset, data_root)
    split = D.make_split(data, profile.val_per_class[dataset], shots, seed)  # validates N before training
    net, tm = get_teacher(dataset, profile, data_root=data_root, output_root=output_root, device=device,
                          teacher=teacher)
    norm = {"mean": net.spec.mean, "std": net.spec.std}
    t_entry = teacher_entry(dataset, profile, teacher=teacher, data_root=data_root, output_root=output_root)
    t_key, stamp = t_entry.key, teacher_stamp(t_entry)
    ev_key = (stamp, str(device), profile.test_limit, profile.val_per_class[dataset])
    if ev_key not in _EVAL_TENSORS:  # the same for every N and seed: made once per process
        if len(_EVAL_TENSORS) >= 2:
            _EVAL_TENSORS.pop(next(iter(_EVAL_TENSORS)))
        val = _balanced_prefix(data.y_train, split.val, VAL_REPORT_SIZE)
        x_test, y_test = D.test_arrays(data, profile.test_limit)
        x_val = D.to_tensor(data.x_train[val], dataset, device, **norm)
        _EVAL_TENSORS[ev_key] = (
            x_val, torch.from_numpy(data.y_train[val]).to(device),
            D.to_tensor(x_test, dataset, device, **norm), torch.from_numpy(y_test).to(device),
            teacher_test_predictions(dataset, profile, data_root=data_root, output_root=output_root,
                                     teacher=teacher).to(device),
            predict(net, x_val).argmax(1))
    x_val, y_val, x_test, y_test, t_test_pred, t_val_pred = _EVAL_TENSORS[ev_key]
    x, y, image_key = data.x_train[split.few_shot], data.y_train[split.few_shot], None
    if source == "synthetic":
        pool = synthetic_pool(dataset, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                              device=device)
        (x, y), image_key = take(pool, shots), pool["metrics"]["cache_key"]
    elif source == "noise":
        x, y = noise_images(net.num_classes, shots, seed)
    return Setting(dataset, shots, seed, profile, teacher, net, tm, t_key,
                   D.to_tensor(x, dataset, device, **norm), torch.from_numpy(y).to(device),
                   x_val, y_val, x_test, y_test, t_test_pred, t_val_pred, data.source, source, image_key, stamp)


def _balanced_prefix(y: np.ndarray, pool: np.ndarray, size: int) -> np.ndarray:
    """At most `size` pool indices, the same number from each class, in a fixed order."""
    classes = np.unique(y[pool])
    per = max(1, size // len(classes))
    return np.sort(np.concatenate([pool[y[pool] == c][:per] for c in classes]))


def base_config(method: str, dataset: str, shots: int, seed: int, profile, teacher_name: str, teacher_key: str,
                image_source: str = "real", image_key: str | None = None) -> dict:
    """What every run's cache key holds besides its schedule and student: the method, the draw, the teacher."""
    cfg = {"method": method, "dataset": dataset, "shots": shots, "seed": seed, "teacher": teacher_key,
           "test_limit": get_profile(profile).test_limit, "val_report_size": VAL_REPORT_SIZE}
    if teacher_name != "vgg16":
        cfg["teacher_name"] = teacher_name
    if image_source != "real":  # real runs keep the keys they had before sources existed
        cfg.update(image_source=image_source, image_key=image_key)
    return cfg


def _base_config(s: Setting, method: str) -> dict:
    return base_config(method, s.dataset, s.shots, s.seed, s.profile, s.teacher_name, s.teacher_key, s.image_source,
                       s.image_key)


def run_entry(method: str, dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16",
              student: dict | None = None, data_root=None, output_root=None, source: str = "real",
              **schedule_overrides) -> Entry:
    """The cache entry a run of `method` uses, found without training or loading a network (only the data's
    hash is read): how a table's `cache_key` is checked against the code."""
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    check_method(method)
    check_teacher(teacher, dataset)
    t_key = teacher_entry(dataset, profile, teacher=teacher, data_root=data_root, output_root=output_root).key
    image_key = None
    if check_source(source) == "synthetic":
        image_key = synthetic_entry(dataset, seed, profile, t_key, output_root).key
    t_spec = teacher_spec_for(dataset, profile, teacher)
    if method in GRAFT_METHODS:
        sched = recipe_for(profile, method, dataset, teacher, source)
    else:
        sched = profile.recipe(method, dataset, teacher)
    cfg = {**base_config(method, dataset, shots, seed, profile, teacher, t_key, source, image_key),
           "schedule": replace(sched, **schedule_overrides), "student": student_spec_for(t_spec, student)}
    return Entry(output_root, "netgraft" if method in GRAFT_METHODS else method, cfg)


MAX_SEED = 2**31


def check_parameters(*, datasets=None, shots=None, seeds=None, profile=None, teacher=None, methods=None) -> None:
    """What a chapter's parameters cell asks for, checked before anything runs, with the command line's messages."""
    as_list = (lambda v: [] if v is None else [v] if isinstance(v, (str, int)) else list(v))
    if profile is not None:
        get_profile(profile)
    for d in as_list(datasets):
        d = D.check_dataset(d)
        if teacher is not None:
            check_teacher(teacher, d)
    for n in as_list(shots):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"shots: N must be a whole number of at least 1 image per class, got {n!r}")
    for seed in as_list(seeds):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < MAX_SEED:
            raise ValueError(f"seeds: a seed is a whole number in [0, 2^31), got {seed!r}")
    for m in as_list(methods):
        check_method(m)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    return method


def student_spec_for(t_spec, student: dict | None = None):
    """The student of a teacher spec: its family's default, or the one these options give (e.g. widths)."""
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in (student or {}).items()}
    try:
        return family(t_spec).student_spec(t_spec, **opts)
    except TypeError as err:
        raise ValueError(f"a {t_spec.family} student takes no options {sorted(opts)} ({err})") from None


def new_parts(teacher: BlockNet, s_spec, seed: int, init: str = "random", x: torch.Tensor | None = None) -> GraftParts:
    """A fresh student tail with its adapters: random weights (the paper), or started from the teacher."""
    torch.manual_seed(seed)
    first, blocks = family(s_spec).student_blocks(teacher.spec, s_spec)
    widths = s_spec.boundary_widths()[first:]
    parts = GraftParts.around(teacher.widths, first, blocks, widths).to(next(teacher.parameters()).device)
    if init in ("teacher", "teacher_fit"):
        parts.set_adapter_maps(inherit(teacher, first, parts.blocks, widths, x, fit=init == "teacher_fit"))
    elif init != "random":
        raise ValueError(f"unknown init {init!r}; use 'random' (the paper), 'teacher' or 'teacher_fit'")
    return parts


# --------------------------------------------------------------------------- NetGraft
def graft_seeds(dataset: str, shots: int, seeds, profile="cpu", *, method: str = "netgraft", teacher: str = "vgg16",
                student: dict | None = None, data_root=None, output_root=None, device=None, stack: str = "auto",
                source: str = "real", **schedule_overrides) -> list[dict]:
    """NetGraft (`method` = its recipe: "netgraft", the book's, or "netgraft_paper") for several seeds,
    trained together; returns each seed's metrics, in order. `student`: options of the family's student
    (e.g. {"widths": ...}; None: the family's default student).

    Seeds already in the cache are read back; the others are trained in one run and each stored in the
    entry a run of that seed alone would use. `stack` picks how the students run ("auto", "loop" or
    "vmap", see nbgraft.batched); it does not change the results. `source`: real images, or images made
    from the teacher alone (see `prepare` and nbgraft.inversion)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    if method not in GRAFT_METHODS:
        raise ValueError(f"{method!r} is not a grafting recipe; use one of {', '.join(GRAFT_METHODS)}")
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    sched = replace(recipe_for(profile, method, dataset, check_teacher(teacher, dataset), source), **schedule_overrides)
    s_spec = student_spec_for(teacher_spec_for(dataset, profile, teacher), student)
    kw = {"teacher": teacher, "data_root": data_root, "output_root": output_root, "device": device}
    settings = [prepare(dataset, shots, seed, profile, source=source, **kw) for seed in seeds]
    entries = [Entry(output_root, "netgraft", {**_base_config(s, method), "schedule": sched, "student": s_spec})
               for s in settings]
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
                entries[k].finish({**metrics, "cache_key": entries[k].key})
    return [e.metrics() for e in entries]


def recipe_for(profile, method: str, dataset: str, teacher: str = "vgg16", source: str = "real") -> GraftSchedule:
    """The schedule of a grafting run: the profile's recipe, except that a run on images made without real data
    scores its grafted parts on the validation pool only (a data-free student is reported at its last epoch;
    chapter 7 and `nbgraft graft --images` share these runs)."""
    sched = get_profile(profile).recipe(method, dataset, teacher)
    return sched if check_source(source) == "real" else replace(sched, part_test_scores=False)


def untrained_student(dataset: str, shots: int, seed: int = 0, profile="cpu", *, method: str = "netgraft",
                      teacher: str = "vgg16", source: str = "real", data_root=None, output_root=None,
                      device=None) -> dict:
    """Scores of the student as `method`'s recipe starts it, before any grafting step (cached): what the
    grafting steps add is measured from here. A student started from the teacher keeps the channels most
    active on the N images (of `source`), so its starting point depends on them too."""
    profile = get_profile(profile)
    sched = profile.recipe(method, D.check_dataset(dataset), check_teacher(teacher, dataset))
    s = prepare(dataset, shots, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                device=device, source=source)
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


def run_netgraft(dataset: str, shots: int, seed: int = 0, profile="cpu", **kw) -> dict:
    """One seed of NetGraft (see graft_seeds); cached. Returns the metrics."""
    return graft_seeds(dataset, shots, [seed], profile, **kw)[0]


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
            "seed_stack": stack_name(s.x.device, stack), "data_source": s.data_source, "images": len(s.x), "image_source": s.image_source,
        }, {"parts.pt": p.state_dict(), "student.pt": student.state_dict()}))
    return out


# --------------------------------------------------------------------------- baselines
def run_baseline(kind: str, dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16",
                 student: dict | None = None, data_root=None, output_root=None, device=None,
                 **schedule_overrides) -> dict:
    """A student trained on the N-shot images alone (see nbgraft.baselines); cached."""
    check_kind(kind)
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    sched = replace(profile.recipe(kind, dataset, check_teacher(teacher, dataset)), **schedule_overrides)
    s = prepare(dataset, shots, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                device=device)
    s_spec = student_spec_for(s.teacher.spec, student)
    entry = Entry(output_root, kind, {**_base_config(s, kind), "schedule": sched, "student": s_spec})
    if entry.done:
        return entry.metrics()
    with entry.lock():
        if entry.done:
            return entry.metrics()
        return _baseline(entry, kind, s, s_spec, sched, seed)


def _baseline(entry: Entry, kind: str, s: Setting, s_spec, sched, seed: int) -> dict:
    entry.start()
    t0 = time.perf_counter()
    model, log = train_baseline(kind, s.teacher, s_spec, s.x, s.y, sched, seed)
    entry.save_tensors("student.pt", model.state_dict())
    scores = s.scores(model, log["first_trained_block"])
    return entry.finish({**_base_config(s, kind), "profile": s.profile.name, "teacher_name": s.teacher_name, **scores,
                         **log, "train_s": log["wall_s"], "wall_s": time.perf_counter() - t0,
                         "teacher_test_accuracy": s.teacher_metrics["test_accuracy"], "schedule": sched,
                         "student_params": count_params(model), "teacher_spec": s.teacher.spec,
                         "student_spec": s_spec, "device": str(s.x.device), "torch_threads": torch.get_num_threads(),
                         "machine": machine(s.x.device),
                         "images": len(s.x), "cache_key": entry.key})


def run_method(method: str, dataset: str, shots: int, seed: int = 0, profile="cpu", **kw) -> dict:
    """Any method of the book by name (profiles.METHODS): a grafting recipe or a baseline."""
    if check_method(method) in GRAFT_METHODS:
        return run_netgraft(dataset, shots, seed, profile, method=method, **kw)
    return run_baseline(method, dataset, shots, seed, profile, **kw)


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


# --------------------------------------------------------------------------- reading the cache
def cached_runs(method: str, output_root=None, *, profile=None, dataset: str | None = None,
                teacher: str = "vgg16", source: str = "real") -> list[dict]:
    """Metrics of every finished run of `method` in the cache (its N images from `source`).

    With `profile` and `dataset`: only that teacher's and data set's runs on the profile's own recipe
    (no ablation overrides, default student), so an old or a variant run never mixes into a curve.
    """
    kind = "netgraft" if method in GRAFT_METHODS else method
    base = Path(output_root if output_root is not None else default_output_root()) / "cache" / kind
    runs = []
    for path in sorted(base.glob("*/metrics.json")):
        if ".damaged-" in path.parent.name:
            continue
        try:
            m = check_metrics(kind, json.loads(path.read_text()), path, path.parent.name)
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
    own = json.loads(json.dumps(_plain(recipe_for(profile, method, dataset, teacher, source)
                                       if method in GRAFT_METHODS else profile.recipe(method, dataset, teacher))))
    student = json.loads(json.dumps(_plain(student_spec_for(teacher_spec_for(dataset, profile, teacher)))))
    return [m for m in runs if m.get("dataset") == dataset and m.get("profile") == profile.name
            and m.get("teacher_name", "vgg16") == teacher and m.get("schedule") == own
            and m.get("student_spec") == student]


RESULT_COLUMNS = ["method", "teacher_name", "dataset", "profile", "shots", "seed", "test_accuracy", "test_agreement",
                  "val_accuracy", "teacher_test_accuracy", "wall_s"]


def results_frame(output_root=None, methods=METHODS, profile=None, teacher: str = "vgg16"):
    """One row per finished run in the cache (the columns of RESULT_COLUMNS); with `profile`, only
    runs on that profile's own recipes (see cached_runs)."""
    if profile is None:
        runs = [m for method in methods for m in cached_runs(method, output_root)]
    else:
        from .profiles import TEACHERS

        runs = [m for method in methods for ds in TEACHERS[teacher]
                for m in cached_runs(method, output_root, profile=profile, dataset=ds, teacher=teacher)]
    return runs_frame(runs)


def runs_frame(runs: list[dict]):
    """One row per run's metrics: method, teacher, data set, N, seed, accuracies (%), wall time (s)."""
    import pandas as pd

    rows = [{c: m.get(c, "vgg16" if c == "teacher_name" else None) for c in RESULT_COLUMNS} for m in runs]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
