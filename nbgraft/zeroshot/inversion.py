"""Images from the teacher alone: model inversion in the manner of DeepInversion (Yin et al., CVPR 2020).

A batch of K images per class starts as noise and is optimised so that the frozen teacher (eval mode)
puts each image in its target class (cross-entropy), while the statistics the batch produces at every
BatchNorm layer match the running mean and variance the teacher stored from its training data, under
a smoothness prior (total variation) and random jitter and flips. The BatchNorm term is what carries
the training data's statistics; a teacher without BatchNorm has none to match, and only the class
term and the image prior remain (what DeepInversion calls DeepDream-style inversion).

The images are rounded to 8 bits and stored like a data set's, so NetGraft runs on them unchanged
(nbgraft.runs.experiments.graft_seeds with `source="synthetic"`). `noise_images` gives the control: the
same number of images of uniform pixel noise. Nothing here reads a real image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data as D
from ..cache import Entry
from ..device import machine, pick_device
from ..evaluate import predict
from ..profiles import get_profile, schedule_for
from ..runs.teacher import get_teacher, teacher_entry

SOURCES = ("real", "synthetic", "noise")


@dataclass(frozen=True)
class InversionSchedule:
    """Adam on the pixels with a cosine decay; loss = CE + bn * BN-statistics + tv * total variation.

    DeepInversion's CIFAR-10 run is 2,000 iterations on a batch of 256; the cpu profile affords 150 on
    100 images. The BatchNorm weight was chosen without any image: on the cpu teacher (seed 0, 250
    iterations) weights 1.0 / 0.1 / 0.05 gave the teacher's accuracy on its own images 84 / 100 / 100 %
    and a final BatchNorm term of 14.6 / 15.2 / 16.7, so 0.1 is the one that reaches every target class
    with the closest statistics. The length was chosen without a real image or label too
    (`benchmarks/inversion_length.py`: seed 0, K = 10, the book's NetGraft, each student scored by its agreement
    with the teacher on CutMix probes of seed 1's synthetic pools, nbgraft.evaluate.label_free_score): 250
    iterations 92.48 %, 150 iterations 91.46 % (the teacher right on 100 % of both pools, a BatchNorm term of
    15.2 against 25.1), at about 0.43 instead of 0.2 s per image. The real validation pool, read only as a
    check, says 86.4 against 86.9 %: the half-point difference of one draw on 1,000 images, which the book
    would not call one.
    """

    iterations: int = 250
    lr: float = 0.1
    bn_weight: float = 0.1
    tv_weight: float = 3e-3
    l2_weight: float = 1e-5
    jitter: int = 2
    pool_per_class: int = 10  # images made per class and seed; K < pool takes the first K of each class


SCHEDULES = {
    "tiny": InversionSchedule(iterations=60),
    "cpu": InversionSchedule(),
    "paper": InversionSchedule(iterations=2000, lr=0.05),
}


def inversion_schedule(profile) -> InversionSchedule:
    return schedule_for(SCHEDULES, profile, "inversion")


def check_images_per_class(ks, profile) -> None:
    """Before any synthesis: every K must fit in the profile's pool of synthetic images per class."""
    have = inversion_schedule(profile).pool_per_class
    bad = [k for k in ks if not 1 <= int(k) <= have]
    if bad:
        raise ValueError(f"images_per_class {bad}: the {get_profile(profile).name} profile makes {have} synthetic "
                         f"images per class and seed; ask for 1 to {have}")


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown image source {source!r}; use one of {', '.join(SOURCES)}")
    return source


class BatchStats:
    """Forward hooks on a network's BatchNorm2d layers: the distance of each batch's channel mean and
    variance to the layer's running statistics, summed over layers (L2 norms, as DeepInversion)."""

    def __init__(self, net: nn.Module):
        self.layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        self.terms: list[torch.Tensor] = []
        self._hooks = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.BatchNorm2d, inputs, _output) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).flatten(1).var(dim=1, unbiased=False)
        self.terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                          + torch.linalg.vector_norm(var - module.running_var))

    def pop(self) -> torch.Tensor:
        out = torch.stack(self.terms).sum() if self.terms else torch.zeros(())
        self.terms = []
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (right and down), per image and channel."""
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


def pixel_bounds(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher-input values of pixels 0 and 1, per channel."""
    m, s = D.channel_stats(mean, std, device)
    return (0 - m) / s, (1 - m) / s


def teacher_input_to_uint8(x: torch.Tensor, mean, std) -> np.ndarray:
    """Teacher-input tensor (NCHW) -> 8-bit images (NHWC), as a data set stores them."""
    m, s = D.channel_stats(mean, std, x.device)
    pixels = (x * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def invert(teacher: nn.Module, labels: torch.Tensor, sched: InversionSchedule, seed: int, mean, std,
           log_every: int = 10) -> tuple[torch.Tensor, dict]:
    """Optimise one image per entry of `labels` against the frozen `teacher`; returns (images, losses).

    The teacher stays in eval mode (its running statistics are the targets, never updated) and its
    weights receive no gradient.
    """
    device = labels.device
    was_training = teacher.training
    teacher.eval()
    req = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)
    stats = BatchStats(teacher)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), 3, 32, 32, generator=gen).to(device).requires_grad_(True)
    lo, hi = pixel_bounds(mean, std, device)
    with torch.no_grad():
        x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    opt = torch.optim.Adam([x], lr=sched.lr, betas=(0.5, 0.9))
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, sched.iterations)
    log = {"iteration": [], "loss": [], "ce": [], "bn": [], "tv": []}
    try:
        for it in range(sched.iterations):
            dy, dx = (torch.randint(-sched.jitter, sched.jitter + 1, (2,), generator=gen).tolist()
                      if sched.jitter else (0, 0))
            view = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if torch.rand((), generator=gen).item() < 0.5:
                view = view.flip(3)
            stats.pop()
            logits = teacher(view)
            ce, bn, tv = F.cross_entropy(logits, labels), stats.pop(), total_variation(x)
            loss = ce + sched.bn_weight * bn + sched.tv_weight * tv + sched.l2_weight * x.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
            if it % log_every == 0 or it == sched.iterations - 1:
                for k, v in (("iteration", it), ("loss", loss.item()), ("ce", ce.item()), ("bn", bn.item()),
                             ("tv", tv.item())):
                    log[k].append(v)
    finally:
        stats.close()
        for p, r in zip(teacher.parameters(), req):
            p.requires_grad_(r)
        teacher.train(was_training)
    log["bn_layers"] = len(stats.layers)
    return x.detach(), log


def class_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    """0,1,..,C-1 repeated `per_class` times: the first C*K entries hold K images of every class."""
    return torch.arange(num_classes, device=device).repeat(per_class)


def synthetic_pool(dataset: str, seed: int = 0, profile="cpu", *, teacher: str = "vgg16", data_root=None,
                   output_root=None, device=None) -> dict:
    """The teacher's synthetic images for one seed (cached): uint8 NHWC `x`, labels `y` and the metrics.

    Made `pool_per_class` per class in one batch; `take(pool, K)` selects the first K of each class."""
    device = pick_device(device)
    profile = get_profile(profile)
    sched = inversion_schedule(profile)
    net, tm = get_teacher(dataset, profile, data_root=data_root, output_root=output_root, device=device,
                          teacher=teacher)
    t_key = teacher_entry(dataset, profile, teacher=teacher, data_root=data_root, output_root=output_root).key
    entry = synthetic_entry(dataset, seed, profile, t_key, output_root)
    if not entry.done:
        with entry.lock():
            if not entry.done:
                _make_pool(entry, net, tm, sched, dataset, seed, device)
    return {**entry.load_tensors("images.pt"), "metrics": entry.metrics()}


def synthetic_entry(dataset: str, seed: int, profile, teacher_key: str, output_root=None) -> Entry:
    """The cache entry of a teacher's synthetic images for one seed (its key is part of the runs on them)."""
    return Entry(output_root, "synthetic", {"dataset": dataset, "teacher": teacher_key, "seed": int(seed),
                                            "schedule": inversion_schedule(profile), "method": "deepinversion"})


def _make_pool(entry: Entry, net, tm: dict, sched: InversionSchedule, dataset: str, seed: int, device) -> None:
    labels = class_labels(net.num_classes, sched.pool_per_class, device)
    mean, std = net.spec.mean, net.spec.std
    t0 = time.perf_counter()
    x, log = invert(net, labels, sched, seed, mean, std)
    wall = time.perf_counter() - t0
    images = teacher_input_to_uint8(x, mean, std)  # scored as NetGraft will read them
    pred = predict(net, D.to_tensor(images, dataset, device, mean=mean, std=std)).argmax(1)
    hit = (pred == labels).float()
    entry.start()
    entry.save_tensors("images.pt", {"x": images, "y": labels.cpu().numpy()})
    entry.finish({
        "dataset": dataset, "seed": int(seed), "images": len(labels), "per_class": sched.pool_per_class,
        "wall_s": wall, "s_per_image": wall / len(labels), "iterations": sched.iterations,
        "teacher_accuracy_on_synthetic": hit.mean().item() * 100,
        "teacher_classes_hit": int(torch.unique(pred).numel()),
        "teacher_test_accuracy": tm["test_accuracy"], "losses": log, "bn_layers": log["bn_layers"],
        "device": str(device), "machine": machine(device), "torch_threads": torch.get_num_threads(),
        "cache_key": entry.key,
    })


def take(pool: dict, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images of every class of a pool (class_labels order)."""
    have = pool["metrics"]["per_class"]
    if not 1 <= per_class <= have:
        raise ValueError(f"asked for {per_class} synthetic images per class, but the pool holds {have} "
                         f"(raise the profile's InversionSchedule.pool_per_class)")
    n = per_class * (len(pool["y"]) // have)
    return pool["x"][:n], pool["y"][:n]


def noise_images(num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The control: uniform 8-bit pixel noise, as many images as the synthetic set (labels only for shape)."""
    rng = np.random.default_rng(10_000 + seed)
    n = num_classes * per_class
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.tile(np.arange(num_classes), per_class)
