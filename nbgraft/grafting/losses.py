"""What the hybrid network is trained to match: the teacher's logits (normalised-logit MSE, the paper; KL, i.e.
Hinton's KD; plain MSE) and, where the grafted part hands over, the teacher's features (see LossPlan).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schedules import GraftSchedule
from .parts import Grafted


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL between the temperature-softened distributions, times T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                    reduction="batchmean") * t * t


def graft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "nmse",
               temperature: float = 4.0) -> torch.Tensor:
    """nmse: squared distance of L2-normalised logits (the paper); kl: Hinton KD; mse: plain."""
    if kind == "nmse":
        return (F.normalize(student_logits, dim=1) - F.normalize(teacher_logits, dim=1)).pow(2).sum(1).mean()
    if kind == "kl":
        return kd_loss(student_logits, teacher_logits, temperature)
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    raise ValueError(f"unknown grafting loss {kind!r}; use 'nmse', 'kl' or 'mse'")


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Squared error of the grafted part's output against the teacher's, relative to the teacher's energy."""
    err = (student_features - teacher_features).pow(2).flatten(1).sum(1)
    return (err / teacher_features.pow(2).flatten(1).sum(1).clamp_min(1e-12)).mean()


@dataclass(frozen=True)
class LossPlan:
    """What the loss of the hybrid Grafted(a, b) reads: the part's output features at teacher boundaries
    `points` (weight `feature_weight`, averaged over them) and the logits (weight `logit_weight`; 0 means
    the teacher's blocks after the part never run)."""

    points: tuple[int, ...]
    logit_weight: float
    feature_weight: float

    @property
    def logits(self) -> bool:
        return self.logit_weight > 0


def loss_plan(sched: GraftSchedule, a: int, b: int, n_blocks: int) -> LossPlan:
    """The schedule's loss for the part a..b: the paper's (logits alone), or with the feature loss at the
    part's exit (`feature_points` = "exit") or at every boundary it produces ("all"). A part ending in the
    logits, or with no feature point, always reads the logits."""
    points: tuple[int, ...] = ()
    if sched.feature_weight:
        span = [b + 1] if sched.feature_points == "exit" else range(a + 1, b + 2)
        points = tuple(p for p in span if p < n_blocks)
    w = sched.logit_weight if points else 1.0
    if not w and b + 1 >= n_blocks:
        w = 1.0
    return LossPlan(points, w, sched.feature_weight)


def run_hybrid(model: Grafted, h: torch.Tensor, plan: LossPlan):
    """(features at plan.points, logits or None) of the hybrid, from the teacher's activation entering block a."""
    feats = []
    for k, unit in enumerate(model.scion, start=model.a + 1):  # unit k - 1's output enters teacher block k
        h = unit(h)
        if k in plan.points:
            feats.append(h)
    logits = model.teacher.run(h, model.b + 1, len(model.teacher)) if plan.logits else None
    return tuple(feats), logits


def plan_loss(feats, logits, acts: dict, plan: LossPlan, logit_fn, feature_fn):
    """Combine the parts of a plan's loss: logit_fn(logits, target), feature_fn(features, target) per point."""
    loss = 0.0
    if plan.logits:
        loss = plan.logit_weight * logit_fn(logits.float(), acts["logits"])
    if plan.points:
        f = sum(feature_fn(x.float(), acts[p].float()) for x, p in zip(feats, plan.points)) / len(plan.points)
        loss = loss + plan.feature_weight * f
    return loss
