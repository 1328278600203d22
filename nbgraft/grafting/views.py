"""What the teacher is asked about: the few-shot images' augmented views (fresh, or a fixed pool), mixup blends,
each (seed, epoch)'s batches, and the teacher's activations at the boundaries a stage reads (computed once
for a pool, per batch for fresh views).
"""

from __future__ import annotations

import torch

from .. import data as D
from ..device import autocast
from ..models import BlockNet
from ..training import VIEWS_SALT, derive_seed, generator


def augmented_views(x: torch.Tensor, views: int, seed: int) -> torch.Tensor:
    """`views` augmented copies of every image, drawn once by `seed`: view v of image i at index i * views + v."""
    gen = generator(derive_seed(seed, VIEWS_SALT), x.device)
    return torch.stack([D.augment(x, gen) for _ in range(views)], dim=1).flatten(0, 1)


def pooled(sched) -> int:
    """Images per source image the teacher's activations are computed for once: 1 without augmentation,
    the pool size with a pool of views, 0 for fresh augmentations every step (always with mixup)."""
    if not sched.augment:
        return 1
    return 0 if sched.mixup else sched.views


def mix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blend, partner index, weight): each image blended with another of the batch, by a weight drawn
    uniformly from [0, 1] (mixup with alpha = 1). The teacher is asked about the blend too, so grafting
    needs no label: the few images give more inputs to match the teacher on."""
    perm = torch.randperm(len(x), generator=gen, device=gen.device).to(x.device)
    lam = torch.rand(len(x), generator=gen, device=gen.device).to(x.device)
    w = lam.view(-1, *([1] * (x.ndim - 1)))
    return w * x + (1 - w) * x[perm], perm, lam


def epoch_batches(x: torch.Tensor, batch_size: int, seed: int, epoch: int, sched):
    """The same shuffled (and augmented) batches for a given (seed, epoch), whoever asks.

    Yields (index, images): with fresh augmentation the augmented images and their indices into x;
    otherwise indices into the image pool (x itself, or its views) and None."""
    gen = generator(derive_seed(seed, epoch), x.device)
    k = pooled(sched)
    for b in D.batches(len(x), batch_size, gen):
        b = b.to(x.device)
        if k == 0:
            xb = D.augment(x[b], gen)
            yield b, (mix(xb, gen)[0] if sched.mixup else xb)
        elif k == 1:
            yield b, None
        else:
            yield b * k + torch.randint(k, (len(b),), generator=gen, device=gen.device).to(x.device), None


class TeacherCache:
    """Teacher activations at the boundaries grafting reads (and its logits).

    Without augmentation, or with a pool of views, computed once over all images of the pool;
    with fresh augmentations, computed per batch. `pools` is [(images, seed)], one per student trained
    together; their pools are concatenated in that order."""

    CHUNK = 512

    def __init__(self, teacher: BlockNet, pools, boundaries, sched):
        self.teacher, self.k = teacher, pooled(sched)
        self.bounds = sorted({i for i in boundaries if i < len(teacher)})
        self.full = None
        if self.k:
            images = [x if self.k == 1 else augmented_views(x, self.k, seed) for x, seed in pools]
            parts = [self._compute(c) for x in images for c in x.split(self.CHUNK)]
            self.full = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def images_per_source(self) -> int:
        return max(1, self.k)

    @torch.no_grad()
    def _compute(self, xb: torch.Tensor) -> dict:
        out, h, prev = {}, xb, 0
        with autocast(xb.device):
            for s in self.bounds:
                h = self.teacher.run(h, prev, s)
                out[s], prev = h, s
            out["logits"] = self.teacher.run(h, prev, len(self.teacher)).float()
        return out

    def get(self, idx: torch.Tensor, xb: torch.Tensor | None) -> dict:
        return self._compute(xb) if self.full is None else {k: v[idx] for k, v in self.full.items()}
