"""Start a thin student from its teacher: keep some of the teacher's channels, copy their weights.

The paper starts every student block from random weights. Here each student block is its teacher block
restricted to a subset of channels (BatchNorm folded in), and its adapters start as the matching
maps: `t2s` selects the kept channels from a teacher activation, `s2t` puts the student's channels
back in their teacher positions (zeros elsewhere). The hybrid network then starts as the pruned
teacher, and with every channel kept it *is* the teacher.

Which channels: at each boundary between blocks, those most active (mean activation) on the few-shot
images; channels that must stay the same along a residual stream are chosen once for the whole
stream (the family says which boundaries share one, `stream_groups`). Inside a block the family
chooses (nbgraft.models.vgg / resnet `inherit_block`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import BlockNet, family

MAX_IMAGES = 512  # channel statistics from at most about this many few-shot images (plenty for a mean)


def selection(keep: torch.Tensor, width: int) -> torch.Tensor:
    """(len(keep), width) matrix picking channels `keep` out of `width`."""
    m = torch.zeros(len(keep), width, dtype=torch.float64)
    m[torch.arange(len(keep)), keep] = 1.0
    return m


@torch.no_grad()
def channel_scores(teacher: BlockNet, x: torch.Tensor, boundaries: Sequence[int],
                   batch_size: int = 500) -> dict[int, torch.Tensor]:
    """Mean absolute activation of every channel at the given boundaries over images x (float64)."""
    sums: dict[int, torch.Tensor] = {}
    teacher.eval()
    for c in range(0, len(x), batch_size):
        acts = teacher.boundaries(x[c: c + batch_size])
        for i in boundaries:
            a = acts[i].double().abs()
            s = a.sum(0) if a.ndim == 2 else a.sum((0, *range(2, a.ndim)))
            sums[i] = sums.get(i, 0) + s
    return {i: s / len(x) for i, s in sums.items()}


def choose_channels(teacher: BlockNet, first: int, student_widths: Sequence[int], x: torch.Tensor,
                    groups: Sequence[Sequence[int]] = ()) -> dict[int, torch.Tensor]:
    """Teacher channel indices kept at each boundary first..L (sorted; all of them where widths agree).

    Boundaries in one group share their choice (scores summed, each boundary's normalised to sum 1)."""
    L = len(teacher)
    bounds = list(range(first, L + 1))
    thin = [i for i in bounds if student_widths[i - first] != teacher.widths[i]]
    keep = {i: torch.arange(teacher.widths[i]) for i in bounds}
    if not thin:
        return keep
    scores = channel_scores(teacher, x, thin)
    done: set[int] = set()
    for i in thin:
        if i in done:
            continue
        group = [g for grp in groups if i in grp for g in grp if g in scores] or [i]
        widths = {student_widths[g - first] for g in group}
        if len(widths) != 1:
            raise ValueError(f"boundaries {group} share a residual stream but the student gives them widths {widths}")
        total = sum(scores[g] / scores[g].sum().clamp_min(1e-12) for g in group)
        chosen = torch.sort(torch.topk(total, widths.pop()).indices).values
        for g in group:
            keep[g] = chosen
            done.add(g)
    return keep


class LeastSquares:
    """The channel map (weight, bias) that best rebuilds target activations from source ones, least squares
    over images and positions, ridge-regularised; fed chunk by chunk (`add`), so a large set never sits in
    memory as float64 rows."""

    def __init__(self):
        self.gram = self.cross = None

    def add(self, source: torch.Tensor, target: torch.Tensor) -> None:
        s = source.movedim(1, -1).reshape(-1, source.shape[1]).double()
        t = target.movedim(1, -1).reshape(-1, target.shape[1]).double()
        s1 = torch.cat([s, torch.ones(len(s), 1, dtype=s.dtype, device=s.device)], 1)
        gram, cross = s1.T @ s1, s1.T @ t
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross

    def solve(self, ridge: float = 1e-3) -> tuple:
        """(weight, bias); `ridge` is relative to the mean diagonal of the Gram matrix."""
        gram = self.gram + ridge * self.gram.diagonal().mean() * torch.eye(len(self.gram), dtype=self.gram.dtype,
                                                                            device=self.gram.device)
        w = torch.linalg.solve(gram, self.cross)
        return w[:-1].T, w[-1]


def fit_exit(student_out: torch.Tensor, teacher_out: torch.Tensor, ridge: float = 1e-3) -> tuple:
    """(weight, bias) of the channel map that best rebuilds the teacher's activation from the student's
    (LeastSquares): init="teacher_fit" starts the exits there instead of at the embedding. On the
    validation pool it did not help, and at 1 shot it overfits."""
    fit = LeastSquares()
    fit.add(student_out, teacher_out)
    return fit.solve(ridge)


def inherit(teacher: BlockNet, first: int, blocks: Sequence[nn.Module], student_widths: Sequence[int],
            x: torch.Tensor, inherit_block: Callable | None = None,
            groups: Sequence[Sequence[int]] | None = None, fit: bool = False) -> list[tuple]:
    """Copy the teacher into the student blocks first..L-1; returns each block's starting adapter maps.

    inherit_block(teacher block, student block, keep_in, keep_out, x_in) fills one student block (the
    teacher's family provides it; pass your own for a network of your own). x: the few-shot images.
    With `fit`, each exit map is the least-squares one (fit_exit) instead of the embedding.
    Returns [(t2s map, s2t map)] per student block, each None (identity) or (weight, bias), for
    GraftParts.set_adapter_maps.
    """
    if inherit_block is None or groups is None:
        if teacher.spec is None:
            if inherit_block is None:
                raise ValueError("starting from the teacher needs to know how to slice its blocks: pass "
                                 "inherit_block= (and groups= for residual streams), or use init='random'")
            groups = []  # a network of your own: no boundaries share a residual stream unless `groups` says so
        else:
            fam = family(teacher.spec)
            inherit_block = inherit_block or fam.inherit_block
            groups = fam.stream_groups(teacher.spec) if groups is None else groups
    x = x[:: -(-len(x) // MAX_IMAGES)]  # every k-th image: the draw is class by class, so this keeps every class
    keep = choose_channels(teacher, first, student_widths, x, groups)
    with torch.no_grad():
        acts = teacher.eval().boundaries(x)
    maps = []
    for j, block in enumerate(blocks):
        i = first + j
        inherit_block(teacher.blocks[i], block, keep[i], keep[i + 1], acts[i])
        t_in, t_out = teacher.widths[i], teacher.widths[i + 1]
        entry = (selection(keep[i], t_in), None) if len(keep[i]) != t_in else None
        exit_ = None
        if len(keep[i + 1]) != t_out:
            exit_ = (selection(keep[i + 1], t_out).T, None)
            if fit:
                with torch.no_grad():
                    h = acts[i][:, keep[i]] if entry is not None else acts[i]
                    exit_ = fit_exit(block.eval()(h), acts[i + 1])
        maps.append((entry, exit_))
    return maps
