"""Scores of grafted networks and students on a fixed image set (validation pool or test set), from the
teacher's activations at the first grafted boundary, computed once: each later score runs only the
student's part."""

from __future__ import annotations

import torch

from ..device import autocast
from ..evaluate import eval_batch
from ..models import BlockNet
from .stacks import LoopedParts, StackedParts


class SharedBoundaries:
    """The teacher's activations of one fixed image set (val or test) entering blocks first..L-1.

    Computed once; every later score of a grafted network or student runs only from there on.
    """

    def __init__(self, teacher: BlockNet, x: torch.Tensor, first: int):
        L = len(teacher)
        self.first, self.acts = first, {i: [] for i in range(first, L)}
        self.chunk = bs = eval_batch(x.device)
        with torch.no_grad(), autocast(x.device):
            for c in range(0, len(x), bs):
                h = teacher.run(x[c: c + bs], 0, first)
                for i in range(first, L):
                    self.acts[i].append(h)
                    h = teacher.blocks[i](h)
        self.acts = {i: torch.cat(v) for i, v in self.acts.items()}

    @torch.no_grad()
    def hybrid_logits(self, stacked: StackedParts | LoopedParts, teacher: BlockNet, a: int, b: int) -> torch.Tensor:
        """(S, N, classes) logits of each seed's Grafted(a, b), in eval mode."""
        f = stacked.hybrid(teacher, a, b, train=False, shared_input=True)
        h, bs = self.acts[a], self.chunk
        with autocast(h.device):
            return torch.cat([f(h[c: c + bs]).float() for c in range(0, len(h), bs)], dim=1)

    @torch.no_grad()
    def student_logits(self, student: BlockNet) -> torch.Tensor:
        """(N, classes) logits of an exported student, whose blocks before `first` are the teacher's."""
        student.eval()
        h, bs = self.acts[self.first], self.chunk
        with autocast(h.device):
            return torch.cat([student.run(h[c: c + bs], self.first, len(student)).float()
                              for c in range(0, len(h), bs)])
