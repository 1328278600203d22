"""MiR, "mimicking then replacing" (Wang et al., CVPR 2022): the pruned student is trained all at once to
reproduce the teacher's penultimate features (the activation entering the classifier), then the teacher's
own classifier replaces the student's. No logits and no labels are matched: the classifier the teacher
learned on the full data set is reused as it is."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..grafting.parts import GraftParts, export_student, new_parts
from ..models import BlockNet
from ..schedules import BaselineSchedule
from .baselines import fit_student


def mir_student(teacher: BlockNet, parts: GraftParts) -> BlockNet:
    """The student's body (its blocks up to the classifier, the last one followed by its map back to the
    teacher's width) with a copy of the teacher's classifier, frozen."""
    if len(parts.blocks) < 2:
        raise ValueError("MiR needs a student whose own blocks start before the classifier")
    body = GraftParts(parts.first, list(parts.blocks[:-1]), list(parts.t2s[:-1]), list(parts.s2t[:-1]),
                      parts.widths[:-1])
    net = export_student(teacher, body, folded=True)  # its last block ends at the student's width
    blocks = list(net.blocks)
    exit_map = parts.s2t[-2]
    if not isinstance(exit_map, nn.Identity):
        blocks[-1] = nn.Sequential(blocks[-1], copy.deepcopy(exit_map))
    head = copy.deepcopy(teacher.blocks[-1]).requires_grad_(False).eval()
    return BlockNet([*blocks, head], (*net.widths[:-1], *teacher.widths[-2:])).eval()


def train_mir(teacher: BlockNet, student_spec, x: torch.Tensor, y: torch.Tensor, sched: BaselineSchedule,
              seed: int = 0) -> tuple[BlockNet, dict]:
    """The pruned student's body trained on the teacher's penultimate features, behind the teacher's classifier."""
    parts = new_parts(teacher, student_spec, seed, init="teacher", x=x)  # the start pruned_student exports
    model = mir_student(teacher, parts)
    for block in model.blocks[: parts.first]:
        block.requires_grad_(False)
    return fit_student(model, parts.first, teacher, x, y, sched, seed, target="features", desc="MiR")
