"""FSKD (Li et al., CVPR 2020): recover a pruned student without SGD, by least squares on the few images.

Block by block from the first, each thin block's output is corrected by a linear channel map fitted so that
the student's activation, computed from its own (already corrected) activations before it, rebuilds the
teacher's, then merged where the student already has a linear layer, so the fitted student has exactly the
book's architecture:
- after a block whose output is thinner than the teacher's (the VGG student), the fit is its 1x1 map back to the
  teacher's width (its adapter, folded between blocks on export);
- inside a block whose boundaries keep the teacher's width (the ResNet student's residual streams), the fit is a
  1x1 map after each thinned branch's last conv, rebuilding the teacher's branch (before the residual sum),
  merged into that conv. The teacher's family says where those convs are (`branch_ends`); a network of your own
  without it gets the first kind only.
The few images are seen as `copies` augmented views each; `ridge` keeps the fit from copying noise at 1 shot."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..grafting.parts import export_student, new_parts, set_map
from ..grafting.views import augmented_views
from ..models import BlockNet, family
from ..models.inherit import LeastSquares
from ..schedules import FitSchedule

CHUNK = 512  # images per forward pass


def _outputs(module: nn.Module, watched: list[nn.Module], inputs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """What each watched submodule outputs while `module` runs on every chunk of inputs."""
    out: list[list[torch.Tensor]] = [[] for _ in watched]
    hooks = [m.register_forward_hook(lambda _m, _i, o, k=k: out[k].append(o)) for k, m in enumerate(watched)]
    try:
        for h in inputs:
            module(h)
    finally:
        for hook in hooks:
            hook.remove()
    return out


def _fit(sources: list[torch.Tensor], targets: list[torch.Tensor], ridge: float) -> tuple:
    fit = LeastSquares()
    for s, t in zip(sources, targets):
        fit.add(s, t)
    return fit.solve(ridge)


@torch.no_grad()
def _merge_after(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """conv := (1x1 map (weight, bias)) o conv."""
    w = torch.einsum("oc,cikl->oikl", weight.double(), conv.weight.double())
    b = weight.double() @ conv.bias.double() + bias.double()
    conv.weight.copy_(w.to(conv.weight.dtype))
    conv.bias.copy_(b.to(conv.bias.dtype))


def _relative_error(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    err = sum((s - t).pow(2).sum().item() for s, t in zip(ours, theirs))
    return err / max(sum(t.pow(2).sum().item() for t in theirs), 1e-12)


def train_fskd(teacher: BlockNet, student_spec, x: torch.Tensor, y: torch.Tensor, sched: FitSchedule,
               seed: int = 0) -> tuple[BlockNet, dict]:
    """The teacher-initialised student with every thin block corrected in turn (no labels, no gradient step)."""
    t0 = time.perf_counter()
    parts = new_parts(teacher, student_spec, seed, init="teacher", x=x).eval()
    branch_ends = getattr(family(teacher.spec), "branch_ends", None) if teacher.spec is not None else None
    images = augmented_views(x, sched.copies, seed) if sched.augment else x
    errors, merged = [], 0
    with torch.no_grad():
        h_t = [teacher.run(c, 0, parts.first) for c in images.split(CHUNK)]
        h_s = list(h_t)
        for j, i in enumerate(parts.positions[:-1]):  # the classifier keeps its teacher weights
            unit, exit_map = parts.unit(i), parts.s2t[j]
            pairs = branch_ends(teacher.blocks[i], parts.blocks[j]) if branch_ends else []
            if pairs:
                targets = _outputs(teacher.blocks[i], [t for _, t in pairs], h_t)
                for (conv, _), target in zip(pairs, targets):  # in order: each fit sees the ones before it merged
                    _merge_after(conv, *_fit(_outputs(unit, [conv], h_s)[0], target, sched.ridge))
                    merged += 1
            h_t = [teacher.blocks[i](h) for h in h_t]
            if not isinstance(exit_map, nn.Identity):
                s_out = [parts.blocks[j](parts.t2s[j](h)) for h in h_s]
                set_map(exit_map, _fit(s_out, h_t, sched.ridge))
                merged += 1
            h_s = [unit(h) for h in h_s]
            errors.append(_relative_error(h_s, h_t))
    model = export_student(teacher, parts, folded=True)
    return model, {"wall_s": time.perf_counter() - t0, "first_trained_block": parts.first,
                   "relative_fit_error": errors, "maps_fitted": merged, "images_fitted": len(images)}
