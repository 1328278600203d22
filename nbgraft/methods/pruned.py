"""The field's starting point, pruning with few-sample recovery: the book's student started from its teacher
(the same kept channels and weights as NetGraft's `init="teacher"`, nbgraft.models.inherit), as one plain
network. `pruned_kd` recovers it the plainest way: trained end to end on the teacher's logits (KD), with the
baselines' SGD, augmentation and mixup."""

from __future__ import annotations

import torch

from ..grafting.parts import GraftParts, export_student, new_parts
from ..models import BlockNet
from ..schedules import BaselineSchedule
from .baselines import fit_student


def pruned_student(teacher: BlockNet, student_spec, x: torch.Tensor, seed: int) -> tuple[BlockNet, GraftParts]:
    """(the teacher-initialised student as a BlockNet, its parts). Its blocks before the first thin one are
    copies of the teacher's, frozen; the rest (the thin blocks with their channel maps folded) train."""
    parts = new_parts(teacher, student_spec, seed, init="teacher", x=x)
    model = export_student(teacher, parts, folded=True)
    for block in model.blocks[: parts.first]:
        block.requires_grad_(False)
    return model, parts


def train_pruned_kd(teacher: BlockNet, student_spec, x: torch.Tensor, y: torch.Tensor, sched: BaselineSchedule,
                    seed: int = 0) -> tuple[BlockNet, dict]:
    """The pruned student trained end to end by KD from the teacher's logits (no labels)."""
    model, parts = pruned_student(teacher, student_spec, x, seed)
    return fit_student(model, parts.first, teacher, x, y, sched, seed, target="logits", desc="pruned + KD")
