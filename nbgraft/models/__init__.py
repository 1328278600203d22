"""Networks as sequences of blocks, the unit grafting works on, and the model families that build them.

A `BlockNet` is any network cut into blocks with known channel widths at every boundary: `widths[i]`
channels enter block i, and the last block produces the logits (`widths[-1]` = classes). Grafting
(nbgraft.grafting) needs nothing else. A *family* (vgg, resnet, or a user's own module) says how to build a
teacher and its student as BlockNets, and optionally how to start a student block from its teacher block
(`inherit_block`, see nbgraft.models.inherit).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn


class BlockNet(nn.Module):
    """`blocks[0..L-1]` in order; run any contiguous range of them. `widths` has L + 1 entries."""

    def __init__(self, blocks: Sequence[nn.Module], widths: Sequence[int], spec=None):
        super().__init__()
        blocks, widths = list(blocks), tuple(int(w) for w in widths)
        if len(widths) != len(blocks) + 1:
            raise ValueError(f"a BlockNet of {len(blocks)} blocks needs {len(blocks) + 1} boundary widths "
                             f"(input, after each block), got {len(widths)}")
        self.blocks = nn.ModuleList(blocks)
        self.widths = widths
        self.spec = spec  # the family spec it was built from (None for a user's own network)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def num_classes(self) -> int:
        return self.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, 0, len(self.blocks))

    def run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks start..stop-1."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def boundaries(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[input, out of block 0, ..., logits]: element i is what block i reads."""
        acts = [x]
        for block in self.blocks:
            acts.append(block(acts[-1]))
        return acts


@runtime_checkable
class ModelFamily(Protocol):
    """What nbgraft asks of a model family: a module (nbgraft.models.vgg, nbgraft.models.resnet) with these names.

    SPEC: the frozen dataclass describing one network of the family; a spec has `family` (the module's name),
        `mean`/`std` (the input normalisation) and `boundary_widths()` (the L + 1 widths of the BlockNet).
    build(spec, init): the BlockNet a spec describes (`init=False`: a skeleton to load weights into).
    student_spec(teacher_spec, **options): the family's default student of a teacher, or the one the options give.
    student_blocks(teacher_spec, student_spec): (first, blocks): the first position where the student differs
        from its teacher, and its own blocks from there to the logits (random weights).
    stream_groups(spec): the boundaries that share one channel stream (a residual stage), which keep the same
        channels when a student starts from its teacher (nbgraft.models.inherit).
    inherit_block(teacher_block, student_block, keep_in, keep_out, x_in): copy a teacher block's weights,
        restricted to the kept channels, into a student block (BatchNorm folded in).
    """

    SPEC: type

    def build(self, spec, init: bool = True) -> BlockNet: ...

    def student_spec(self, teacher, **options): ...

    def student_blocks(self, teacher, student) -> tuple[int, list[nn.Module]]: ...

    def stream_groups(self, spec) -> list: ...

    def inherit_block(self, t_block: nn.Module, s_block: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor,
                      x_in: torch.Tensor): ...


FAMILIES = ("vgg", "resnet")


def family(name_or_spec) -> ModelFamily:
    """The module of a model family (nbgraft.models.vgg, ...), from its name or one of its specs."""
    name = name_or_spec if isinstance(name_or_spec, str) else getattr(name_or_spec, "family", None)
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; nbgraft builds {', '.join(FAMILIES)} "
                         "(a network of your own enters as a BlockNet, see the README)")
    return importlib.import_module(f"{__name__}.{name}")


def build(spec, init: bool = True) -> BlockNet:
    """The BlockNet a family spec describes (teacher or student), freshly initialised."""
    return family(spec).build(spec, init=init)


def student_net(teacher: BlockNet, student_spec, inherit_prefix: bool = False) -> tuple[BlockNet, int]:
    """(the whole student network, first block of its own). Its blocks before `first` have the teacher's
    architecture: copies of the teacher's, frozen (`inherit_prefix`), or freshly initialised ones."""
    import copy

    first, blocks = family(student_spec).student_blocks(teacher.spec, student_spec)
    if inherit_prefix:
        prefix = [copy.deepcopy(b).requires_grad_(False) for b in teacher.blocks[:first]]
    else:
        prefix = list(build(teacher.spec).blocks[:first])
    widths = (*teacher.widths[: first + 1], *student_spec.boundary_widths()[first + 1:])
    return BlockNet([*prefix, *blocks], widths, student_spec), first


def spec_from_dict(d: dict):
    """A spec back from its JSON form (lists become tuples)."""
    if not isinstance(d, dict):
        return d
    cls = family(d.get("family")).SPEC
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


def load_state(model: nn.Module, state: dict, what: str) -> None:
    """load_state_dict with an error that says which checkpoint does not fit which architecture."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} is not a state dict of tensors; it may be damaged or another kind of file")
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(ours[k].shape)}"
              for k in ours.keys() & state.keys() if state[k].shape != ours[k].shape]
    if missing or extra or shapes:
        detail = "; ".join(filter(None, [
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}" if missing else "",
            f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}" if extra else "",
            "shape mismatch " + ", ".join(shapes[:4]) if shapes else "",
        ]))
        raise ValueError(
            f"{what} does not fit this architecture ({detail}). It was probably saved for another profile, "
            "width, model or data set: rebuild the model from the checkpoint's own spec, or delete the stale "
            "cache entry."
        )
    model.load_state_dict(state)


def init_weights(model: nn.Module) -> None:
    """He init for convs, small normal for linear layers, unit BatchNorm: the one init every family uses."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def fold_batchnorms(model: nn.Module, x: torch.Tensor | None = None) -> nn.Module:
    """A copy of `model` in eval mode with every BatchNorm2d folded into the Conv2d registered just before it in the
    same parent: the network as a deployment runs it (folding is free), so that a BN-free student is timed against
    what a user would run anyway. Checked on `x` (default: two random 3x32x32 images); a network whose BatchNorms
    do not follow those convs raises instead of timing something else."""
    import copy

    out = copy.deepcopy(model).eval()
    folded = 0
    for parent in list(out.modules()):
        children = list(parent.named_children())
        for (_, conv), (name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
                w, b = fold_bn(conv.weight, conv.bias, bn)
                conv.weight.copy_(w.to(conv.weight.dtype))
                conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
                setattr(parent, name, nn.Identity())
                folded += 1
    if not folded:  # nothing changed (a BN-free student): the copy is the network
        return out
    x = torch.randn(2, 3, 32, 32, device=next(model.parameters()).device) if x is None else x
    was = model.training
    ref, got = model.eval()(x), out(x)
    model.train(was)
    if not torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * ref.abs().max().item()):
        raise ValueError("folding the BatchNorms into the convs before them changed the network's outputs (a "
                         "BatchNorm here does not directly follow the conv registered before it): time it unfolded")
    return out


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a conv or linear layer followed by `bn` in eval mode, as one layer (float64 math)."""
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                    device=w.device)
    if bn is not None and not isinstance(bn, nn.Identity):
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale.view(-1, *([1] * (w.ndim - 1)))
        b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w, b
