"""Small pieces every training loop shares: seeding, SGD with warm-up + cosine, progress bars."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Strides that derive the seed of each use of a run's seed (frozen: changing one changes every number of the
# book). A derived seed is seed * stride + salt, so uses with different salts below the stride never collide.
SEED_STRIDE = 1_000_003  # grafting: an epoch's batches (salt: the epoch), the pool of views (salt: VIEWS_SALT)
VIEWS_SALT = 999_983
NET_STEP_STRIDE = 7919  # net stage: step b's seed is derive_seed(b + 1, seed, NET_STEP_STRIDE)
TEACHER_STRIDE = 100_003  # the teacher's epochs (salt: the epoch)


def derive_seed(seed: int, salt: int, stride: int = SEED_STRIDE) -> int:
    """The seed of one use (an epoch, a pool, a step) of `seed`: seed * stride + salt."""
    return seed * stride + salt


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on the training device, so batches and augmentation replay exactly for a seed."""
    g = torch.Generator(device=device if device.type == "cuda" else "cpu")
    g.manual_seed(seed)
    return g


def sgd_with_cosine(model: nn.Module, lr: float, momentum: float, weight_decay: float, total_steps: int,
                    warmup_steps: int = 0):
    """SGD (Nesterov) whose learning rate warms up linearly, then follows a cosine to zero, per step."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=momentum, nesterov=True)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def progress(iterable=None, **kw):
    """tqdm that stays quiet when NBGRAFT_QUIET is set (tests, papermill logs)."""
    kw.setdefault("disable", bool(os.environ.get("NBGRAFT_QUIET")))
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)
