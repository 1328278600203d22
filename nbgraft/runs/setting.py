"""A run's inputs and identity: the teacher and tensors of one few-shot draw (`prepare`), the key its cache
entry is stored under (`base_config`, `run_entry`), and the checks of a chapter's parameters.

Each run's metrics are stored under `outputs/cache/<kind>/<hash>/`; asking again for a finished config only
reads JSON. The test set is evaluated for the report at fixed points (end of each stage); nothing is chosen
on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import data as D
from ..cache import RUN_METRICS, Entry, Memo
from ..device import pick_device
from ..evaluate import predict
from ..grafting.scoring import SharedBoundaries
from ..methods import check_method
from ..models import BlockNet, family
from ..profiles import get_profile
from ..zeroshot.inversion import check_source, noise_images, synthetic_entry, synthetic_pool, take
from .teacher import (check_teacher, get_teacher, teacher_entry, teacher_label, teacher_spec_for, teacher_stamp,
                      teacher_test_predictions)

VAL_REPORT_SIZE = 1000  # validation images scored per run (a fixed class-balanced prefix of the pool)


@dataclass
class Setting:
    """Everything a run needs: the teacher and the tensors of its N-shot draw, val pool and test set."""

    dataset: str
    shots: int
    seed: int
    profile: object
    teacher_name: str  # as tables and run keys name it (nbgraft.runs.teacher.teacher_label)
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
    teacher_seed: int = 0  # which training of the teacher's recipe (a trained teacher only; 0: the book's)

    def boundaries(self, split: str, first: int) -> SharedBoundaries:
        """The teacher's val or test activations from block `first` on (computed once per process)."""
        key = (self.teacher_stamp, split, first, str(self.x.device), len(self.x_test))
        return _BOUNDARIES.get(key, lambda: SharedBoundaries(self.teacher, self.x_val if split == "val" else self.x_test,
                                                             first))

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


# Per process: the teacher's activations of the val/test sets from a block on, and per teacher the val and test
# tensors with the teacher's predictions on them (the same for every N and seed of a sweep).
_BOUNDARIES = Memo(4)
_EVAL_TENSORS = Memo(2)


def prepare(dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16", data_root=None,
            output_root=None, device=None, source: str = "real", teacher_seed: int = 0) -> Setting:
    """The teacher and tensors of one run. `source`: the N images per class are the seed's real draw
    ("real"), the teacher's own synthetic images ("synthetic", no real image in training) or pixel noise.
    `teacher_seed`: which training of a trained teacher's recipe (0, the book's; another checks a claim on a
    second teacher)."""
    device = pick_device(device)
    check_source(source)
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    teacher = check_teacher(teacher, dataset)
    check_teacher_seed(teacher_seed, teacher, source)
    data = D.load_dataset(dataset, data_root)
    split = D.make_split(data, profile.val_per_class[dataset], shots, seed)  # validates N before training
    net, tm = get_teacher(dataset, profile, seed=teacher_seed, data_root=data_root, output_root=output_root,
                          device=device, teacher=teacher)
    norm = {"mean": net.spec.mean, "std": net.spec.std}
    t_entry = teacher_entry(dataset, profile, seed=teacher_seed, teacher=teacher, data_root=data_root,
                            output_root=output_root)
    t_key, stamp = t_entry.key, teacher_stamp(t_entry)
    ev_key = (stamp, str(device), profile.test_limit, profile.val_per_class[dataset])

    def eval_tensors():  # the same for every N and seed: made once per process
        val = _balanced_prefix(data.y_train, split.val, VAL_REPORT_SIZE)
        x_test, y_test = D.test_arrays(data, profile.test_limit)
        x_val = D.to_tensor(data.x_train[val], dataset, device, **norm)
        return (x_val, torch.from_numpy(data.y_train[val]).to(device),
                D.to_tensor(x_test, dataset, device, **norm), torch.from_numpy(y_test).to(device),
                teacher_test_predictions(dataset, profile, seed=teacher_seed, data_root=data_root,
                                         output_root=output_root, teacher=teacher).to(device),
                predict(net, x_val).argmax(1))

    x_val, y_val, x_test, y_test, t_test_pred, t_val_pred = _EVAL_TENSORS.get(ev_key, eval_tensors)
    x, y, image_key = data.x_train[split.few_shot], data.y_train[split.few_shot], None
    if source == "synthetic":
        pool = synthetic_pool(dataset, seed, profile, teacher=teacher, data_root=data_root, output_root=output_root,
                              device=device)
        (x, y), image_key = take(pool, shots), pool["metrics"]["cache_key"]
    elif source == "noise":
        x, y = noise_images(net.num_classes, shots, seed)
    return Setting(dataset, shots, seed, profile, teacher_label(teacher), net, tm, t_key,
                   D.to_tensor(x, dataset, device, **norm), torch.from_numpy(y).to(device),
                   x_val, y_val, x_test, y_test, t_test_pred, t_val_pred, data.source, source, image_key, stamp,
                   teacher_seed)


def check_teacher_seed(teacher_seed: int, teacher: str = "vgg16", source: str = "real") -> int:
    """`teacher_seed`, if it names a teacher nbgraft can train again: only the VGG16 is trained here (a published
    teacher is one file), and only real draws take another (synthetic images are made from the book's teacher)."""
    D.check_seed(teacher_seed, "teacher_seed: ")
    if teacher_seed and teacher != "vgg16":
        raise ValueError(f"the {teacher} teacher is a published file, trained once: teacher_seed must be 0, "
                         f"got {teacher_seed}")
    if teacher_seed and source != "real":
        raise ValueError("runs on synthetic or noise images use the book's teacher: teacher_seed must be 0")
    return teacher_seed


def _balanced_prefix(y: np.ndarray, pool: np.ndarray, size: int) -> np.ndarray:
    """At most `size` pool indices, the same number from each class, in a fixed order."""
    classes = np.unique(y[pool])
    per = max(1, size // len(classes))
    return np.sort(np.concatenate([pool[y[pool] == c][:per] for c in classes]))


def base_config(method: str, dataset: str, shots: int, seed: int, profile, teacher_name: str, teacher_key: str,
                image_source: str = "real", image_key: str | None = None, teacher_seed: int = 0) -> dict:
    """What every run's cache key holds besides its schedule and student: the method, the draw, the teacher."""
    cfg = {"method": method, "dataset": dataset, "shots": shots, "seed": seed, "teacher": teacher_key,
           "test_limit": get_profile(profile).test_limit, "val_report_size": VAL_REPORT_SIZE}
    if teacher_name != "vgg16":
        cfg["teacher_name"] = teacher_name
    if teacher_seed:  # the book's teacher keeps the keys its runs had before teacher seeds existed
        cfg["teacher_seed"] = teacher_seed
    if image_source != "real":  # real runs keep the keys they had before sources existed
        cfg.update(image_source=image_source, image_key=image_key)
    return cfg


def _base_config(s: Setting, method: str) -> dict:
    return base_config(method, s.dataset, s.shots, s.seed, s.profile, s.teacher_name, s.teacher_key, s.image_source,
                       s.image_key, s.teacher_seed)


def recipe_for(profile, method: str, dataset: str, teacher: str = "vgg16", source: str = "real"):
    """The schedule of a run of `method`: the profile's recipe it reads (nbgraft.methods), except that a grafting
    run on images made without real data scores its grafted parts on the validation pool only (a data-free
    student is reported at its last epoch; chapter 7 and `nbgraft graft --images` share these runs)."""
    m = check_method(method)
    sched = get_profile(profile).recipe(m.recipe_name, dataset, teacher)
    return sched if m.kind != "graft" or check_source(source) == "real" else replace(sched, part_test_scores=False)


def run_cache_entry(output_root, method: str, base: dict, sched, s_spec) -> Entry:
    """The cache entry of a run: its base config (base_config) with its schedule and student, stored under
    the method's cache folder and checked for what a finished run holds."""
    m = check_method(method)
    return Entry(output_root, m.cache_kind, {**base, "schedule": sched, "student": s_spec}, metrics=RUN_METRICS,
                 files=m.files)


def student_spec_for(t_spec, student: dict | None = None):
    """The student of a teacher spec: its family's default, or the one these options give (e.g. widths)."""
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in (student or {}).items()}
    try:
        return family(t_spec).student_spec(t_spec, **opts)
    except TypeError as err:
        raise ValueError(f"a {t_spec.family} student takes no options {sorted(opts)} ({err})") from None


def run_entry(method: str, dataset: str, shots: int, seed: int = 0, profile="cpu", *, teacher: str = "vgg16",
              student: dict | None = None, data_root=None, output_root=None, source: str = "real",
              teacher_seed: int = 0, **schedule_overrides) -> Entry:
    """The cache entry a run of `method` uses, found without training or loading a network (only the data's
    hash is read): how a table's `cache_key` is checked against the code."""
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    teacher = check_teacher(teacher, dataset)
    check_teacher_seed(teacher_seed, teacher, source)
    t_key = teacher_entry(dataset, profile, seed=teacher_seed, teacher=teacher, data_root=data_root,
                          output_root=output_root).key
    image_key = None
    if check_source(source) == "synthetic":
        image_key = synthetic_entry(dataset, seed, profile, t_key, output_root).key
    t_spec = teacher_spec_for(dataset, profile, teacher)
    base = base_config(method, dataset, shots, seed, profile, teacher_label(teacher), t_key, source, image_key,
                       teacher_seed)
    return run_cache_entry(output_root, method, base,
                           replace(recipe_for(profile, method, dataset, teacher, source), **schedule_overrides),
                           student_spec_for(t_spec, student))


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
        D.check_shots(n, "shots: ")
    for seed in as_list(seeds):
        D.check_seed(seed, "seeds: ")
    for m in as_list(methods):
        check_method(m)
