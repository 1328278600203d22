"""The two baselines NetGraft must beat on the same N-shot draw, both from a randomly initialised student:
`scratch` learns from the N-shot labels, `kd` (Hinton et al.) from the teacher's logits on the
N-shot images, no labels."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import data as D
from .device import autocast
from .models import BlockVGG, VGGSpec
from .profiles import BaselineSchedule
from .training import generator, progress, sgd_with_cosine

KINDS = ("scratch", "kd")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean") * t * t


def train_baseline(kind: str, spec: VGGSpec, x: torch.Tensor, y: torch.Tensor | None, sched: BaselineSchedule,
                   teacher: BlockVGG | None = None, seed: int = 0) -> tuple[BlockVGG, dict]:
    """Train a fresh student for `sched.steps` SGD steps; returns it (eval mode) and its loss curve."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; use one of {KINDS}")
    if kind == "kd" and teacher is None:
        raise ValueError("the kd baseline needs the teacher")
    torch.manual_seed(seed)
    model = BlockVGG(spec).to(x.device)
    opt, lr_sched = sgd_with_cosine(model, sched.lr, sched.momentum, sched.weight_decay, sched.steps,
                                    max(1, sched.steps // 20))
    bs = min(sched.batch_size, len(x))
    gen = generator(seed, x.device)
    losses, step, t0 = [], 0, time.perf_counter()
    bar = progress(total=sched.steps, desc=f"baseline {kind}")
    model.train()
    while step < sched.steps:
        for b in D.batches(len(x), bs, gen, drop_last=True):
            b = b.to(x.device)
            xb = D.augment(x[b], gen) if sched.augment else x[b]
            with autocast(x.device):
                out = model(xb).float()
                if kind == "scratch":
                    loss = F.cross_entropy(out, y[b])
                else:
                    with torch.no_grad():
                        target = teacher(xb).float()
                    loss = kd_loss(out, target, sched.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            losses.append(loss.item())
            step += 1
            bar.update()
            if step >= sched.steps:
                break
    bar.close()
    every = max(1, len(losses) // 100)
    curve = [sum(losses[i : i + every]) / len(losses[i : i + every]) for i in range(0, len(losses), every)]
    return model.eval(), {"loss_curve": curve, "loss_every_steps": every, "wall_s": time.perf_counter() - t0}
