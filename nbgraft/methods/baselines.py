"""The students NetGraft must beat on the same N-shot draw, with the same augmentation.

`scratch` learns from the N-shot labels, `kd` (Hinton et al.) from the teacher's logits on the N-shot
images (no labels); both start from random weights. Their `_inherited` versions keep the teacher's
blocks before the first thin one, frozen, exactly as the NetGraft student does, and train only the
rest: they separate what grafting brings from what inheriting trained blocks brings.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import data as D
from ..device import autocast
from ..grafting.losses import feature_loss, kd_loss
from ..grafting.views import TeacherCache, augmented_views, mix, pooled
from ..models import BlockNet, student_net
from ..schedules import BaselineSchedule
from ..training import generator, progress, sgd_with_cosine

def train_baseline(teacher: BlockNet, student_spec, x: torch.Tensor, y: torch.Tensor, sched: BaselineSchedule,
                   seed: int = 0, *, labels: bool, inherited: bool) -> tuple[BlockNet, dict]:
    """Train a fresh student for `sched.steps` SGD steps; returns it (eval mode) and its loss curve."""
    torch.manual_seed(seed)
    model, first = student_net(teacher, student_spec, inherit_prefix=inherited)
    return fit_student(model.to(x.device), first if inherited else 0, teacher, x, y, sched, seed,
                       target="labels" if labels else "logits",
                       desc=f"baseline ({'labels' if labels else 'KD'}{', inherited' if inherited else ''})")


def fit_student(model: BlockNet, first: int, teacher: BlockNet, x: torch.Tensor, y: torch.Tensor,
                sched: BaselineSchedule, seed: int, *, target: str, desc: str = "student") -> tuple[BlockNet, dict]:
    """Train `model` (its blocks before `first` frozen, the teacher's) for `sched.steps` SGD steps on the
    N-shot images; returns it (eval mode) and its log.

    target: "labels" (cross-entropy), "logits" (KD from the teacher's logits) or "features" (the relative
    squared error of the activation entering the last block against the teacher's: the last block is then
    not trained, as the teacher's classifier is reused). Images come as NetGraft sees them: fresh
    augmentations, or (sched.views > 0) a fixed pool of views drawn by the same seed. A model with kept
    blocks reads the teacher's cached activations where its own blocks start, so its frozen blocks never
    run in training."""
    if target not in ("labels", "logits", "features"):
        raise ValueError(f"unknown target {target!r}; use 'labels', 'logits' or 'features'")
    opt, lr_sched = sgd_with_cosine(model, sched.lr, sched.momentum, sched.weight_decay, sched.steps,
                                    max(1, sched.steps // 20))
    k = pooled(sched)
    pool = None if k in (0, 1) else augmented_views(x, k, seed)
    last = len(model) - (target == "features")  # the features entering the last block, or the logits
    bounds = ([first] if first else []) + ([last] if target == "features" else [])
    cache = None
    if first or target != "labels":
        cache = TeacherCache(teacher, [(x, seed)], bounds, sched)
    bs = min(sched.batch_size, len(x))
    gen = generator(seed, x.device)
    losses, step, t0 = [], 0, time.perf_counter()
    bar = progress(total=sched.steps, desc=desc)
    model.train()
    for m in model.blocks[:first]:
        m.eval()
    for m in model.blocks[last:]:
        m.eval()
    while step < sched.steps:
        for b in D.batches(len(x), bs, gen, drop_last=True):
            b = b.to(x.device)
            perm = lam = None
            if k == 0:
                xb, idx = D.augment(x[b], gen), b
                if sched.mixup:
                    xb, perm, lam = mix(xb, gen)
            else:
                idx = b if k == 1 else b * k + torch.randint(k, (len(b),), generator=gen, device=gen.device).to(b.device)
                xb = x[b] if k == 1 else pool[idx]
            acts = cache.get(idx, xb) if cache is not None else {}
            with autocast(x.device):
                out = (model.run(acts[first], first, last) if first else model.run(xb, 0, last)).float()
                if target == "features":
                    loss = feature_loss(out, acts[last].float())
                elif target == "logits":
                    loss = kd_loss(out, acts["logits"], sched.temperature)
                elif perm is None:
                    loss = F.cross_entropy(out, y[b])
                else:  # mixup on labels: each blend's two classes, weighted as the images
                    loss = (lam * F.cross_entropy(out, y[b], reduction="none")
                            + (1 - lam) * F.cross_entropy(out, y[b][perm], reduction="none")).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            losses.append(loss.detach())  # read once at the end: no host sync per step
            step += 1
            bar.update()
            if step >= sched.steps:
                break
    bar.close()
    losses = torch.stack(losses).tolist()
    every = max(1, len(losses) // 100)
    curve = [sum(losses[i: i + every]) / len(losses[i: i + every]) for i in range(0, len(losses), every)]
    return model.eval(), {"loss_curve": curve, "loss_every_steps": every, "wall_s": time.perf_counter() - t0,
                          "first_trained_block": first}
