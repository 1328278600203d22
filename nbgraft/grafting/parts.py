"""What grafting trains and what it hands back: the adapters (channel maps), the student's grafted parts,
the hybrid network (the teacher with some blocks replaced) and the exported standalone student.

Each student block j comes with two adapters: `t2s[j]` maps teacher-width activations to the block's input
width, `s2t[j]` maps its output back to teacher width (the identity where widths agree). A chain of student
blocks a..b is a sequence of such (t2s, block, s2t) units; export folds each s2t[j] -> t2s[j + 1] pair into
one map.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models import BlockNet, family
from ..models.inherit import inherit


class ChannelMap(nn.Module):
    """A learned linear map across channels (dim 1): a 1x1 conv on (B, C, H, W), a linear layer on (B, C)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) * (2.0 / c_out) ** 0.5)  # He init, fan-out
        self.bias = nn.Parameter(torch.zeros(c_out))

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return F.conv2d(x, self.weight[:, :, None, None], self.bias)
        if x.ndim == 2:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x.movedim(1, -1), self.weight, self.bias).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


def adapter(c_in: int, c_out: int) -> nn.Module:
    """A trainable channel map from c_in to c_out channels, or the identity where they agree."""
    return nn.Identity() if c_in == c_out else ChannelMap(c_in, c_out)


def fold(first: nn.Module, second: nn.Module) -> nn.Module:
    """One module computing second(first(x)) for two channel maps (either may be the identity)."""
    if isinstance(first, nn.Identity):
        return copy.deepcopy(second)
    if isinstance(second, nn.Identity):
        return copy.deepcopy(first)
    w1, b1, w2, b2 = (t.detach().double() for t in (first.weight, first.bias, second.weight, second.bias))
    out = ChannelMap(w1.shape[1], w2.shape[0]).to(first.weight.device)
    with torch.no_grad():
        out.weight.copy_((w2 @ w1).to(first.weight.dtype))
        out.bias.copy_((w2 @ b1 + b2).to(first.bias.dtype))
    return out


@torch.no_grad()
def set_map(m: nn.Module, value: tuple | None) -> None:
    """Give a channel map a fixed starting (weight, bias) (bias None: zero); nothing to do for an identity."""
    if value is None or isinstance(m, nn.Identity):
        return
    weight, bias = value
    m.weight.copy_(weight.to(m.weight.dtype))
    if bias is None:
        m.bias.zero_()
    else:
        m.bias.copy_(bias.to(m.bias.dtype))


class GraftParts(nn.Module):
    """The student blocks first..L-1 and the adapters around each: everything grafting trains."""

    def __init__(self, first: int, blocks: list[nn.Module], t2s: list[nn.Module], s2t: list[nn.Module],
                 widths=None):
        super().__init__()
        if not (len(blocks) == len(t2s) == len(s2t)) or not blocks:
            raise ValueError("need one block and two adapters per grafted position")
        self.first = first
        self.blocks, self.t2s, self.s2t = nn.ModuleList(blocks), nn.ModuleList(t2s), nn.ModuleList(s2t)
        self.widths = tuple(widths) if widths is not None else None  # the student's, at boundaries first..L

    @classmethod
    def around(cls, teacher_widths, first: int, blocks: list[nn.Module], student_widths) -> GraftParts:
        """Student blocks for teacher positions first..L-1, with adapters between the two width lists.

        teacher_widths: the teacher's L + 1 boundary widths; student_widths: the student's widths at
        boundaries first..L (one more than blocks). The logits must agree (same classes)."""
        tw, sw = tuple(teacher_widths), tuple(student_widths)
        if first < 0 or first + len(blocks) != len(tw) - 1:
            raise ValueError(f"{len(blocks)} student blocks from position {first} do not end at the teacher's "
                             f"last block ({len(tw) - 1} blocks): the student must replace the teacher's tail")
        if len(sw) != len(blocks) + 1:
            raise ValueError(f"need {len(blocks) + 1} student boundary widths (entering each block, then the logits), "
                             f"got {len(sw)}")
        if sw[-1] != tw[-1]:
            raise ValueError(f"the student predicts {sw[-1]} classes, the teacher {tw[-1]}")
        t2s = [adapter(tw[first + j], sw[j]) for j in range(len(blocks))]
        s2t = [adapter(sw[j + 1], tw[first + j + 1]) for j in range(len(blocks))]
        return cls(first, blocks, t2s, s2t, sw)

    @property
    def positions(self) -> list[int]:
        """The teacher block index of each grafted student block."""
        return list(range(self.first, self.first + len(self.blocks)))

    @property
    def last(self) -> int:
        return self.first + len(self.blocks) - 1

    def unit(self, i: int) -> nn.Sequential:
        """What takes teacher block i's place: (t2s, student block, s2t), teacher width in and out."""
        j = i - self.first
        return nn.Sequential(self.t2s[j], self.blocks[j], self.s2t[j])

    def chain(self, a: int, b: int) -> nn.Sequential:
        """Student blocks a..b (teacher indices, inclusive) with their adapters: the units a..b in a row.
        Unit k's output is the activation entering teacher block k + 1 (where a feature loss can look)."""
        return nn.Sequential(*(self.unit(i) for i in range(a, b + 1)))

    def chain_params(self, a: int, b: int) -> tuple[list, list]:
        """(block parameters, adapter parameters) of the chain a..b."""
        js = range(a - self.first, b - self.first + 1)
        blocks = [p for j in js for p in self.blocks[j].parameters()]
        adapters = [p for j in js for m in (self.t2s[j], self.s2t[j]) for p in m.parameters()]
        return blocks, adapters

    def set_adapter_maps(self, maps: list[tuple]) -> None:
        """Starting maps (t2s, s2t) per grafted block, as nbgraft.models.inherit returns them."""
        for j, (w_in, w_out) in enumerate(maps):
            set_map(self.t2s[j], w_in)
            set_map(self.s2t[j], w_out)


class Grafted(nn.Module):
    """The teacher with its blocks a..b replaced by the student chain a..b."""

    def __init__(self, teacher: BlockNet, parts: GraftParts, a: int, b: int):
        super().__init__()
        self.teacher, self.parts, self.a, self.b = teacher, parts, a, b
        self.scion = parts.chain(a, b)
        self._teacher_modules = tuple(teacher.modules())  # read at every step by train()

    def train(self, mode: bool = True) -> Grafted:
        """Only the scion changes mode: the teacher stays in eval (its BN statistics are fixed). Called at
        every step, so the teacher's modules are only read, not all set twice (a tenth of a VGG run's time)."""
        self.training = mode
        self.scion.train(mode)
        if any(m.training for m in self._teacher_modules):
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_boundary(self.teacher.run(x, 0, self.a))

    def from_boundary(self, h: torch.Tensor) -> torch.Tensor:
        """From the teacher's activation entering block a."""
        return self.teacher.run(self.scion(h), self.b + 1, len(self.teacher))


def export_student(teacher: BlockNet, parts: GraftParts, folded: bool = True) -> BlockNet:
    """The student as a plain BlockNet: copies of the teacher's blocks before `first`, then each student
    block followed by its folded adapter pair s2t[j] -> t2s[j + 1] (`folded=False` keeps both maps).

    Its structure depends only on the two architectures, so `export_student(teacher_skeleton,
    parts_skeleton).load_state_dict(saved)` rebuilds a saved student."""
    if parts.widths is None:
        raise ValueError("export needs GraftParts built with GraftParts.around (it knows the student's widths)")
    blocks: list[nn.Module] = [copy.deepcopy(b) for b in teacher.blocks[: parts.first]]
    widths = (*teacher.widths[: parts.first + 1], *parts.widths[1:])
    for j, block in enumerate(parts.blocks):
        mods = [copy.deepcopy(parts.t2s[0])] if j == 0 and not isinstance(parts.t2s[0], nn.Identity) else []
        mods.append(copy.deepcopy(block))
        if j + 1 < len(parts.blocks):
            pair = (parts.s2t[j], parts.t2s[j + 1])
            if folded:
                mods.append(fold(*pair))
            else:
                mods += [copy.deepcopy(m) for m in pair]
        mods = [m for m in mods if not isinstance(m, nn.Identity)]
        blocks.append(mods[0] if len(mods) == 1 else nn.Sequential(*mods))
    return BlockNet(blocks, widths).eval()


def folds_adapters(parts: GraftParts) -> bool:
    """Whether export merges any adapter pair (two channel maps in a row); if not, the folded and the
    unfolded student are the same network."""
    return any(not isinstance(a, nn.Identity) and not isinstance(b, nn.Identity)
               for a, b in zip(parts.s2t[:-1], parts.t2s[1:]))


def new_parts(teacher: BlockNet, s_spec, seed: int, init: str = "random", x: torch.Tensor | None = None) -> GraftParts:
    """A fresh student tail (its family's `student_blocks`) with its adapters: random weights (the paper), or
    started from the teacher (`init="teacher"`: kept channels, BatchNorm folded in, adapters that select and
    re-embed them; "teacher_fit" also fits each exit map on `x`, see nbgraft.models.inherit)."""
    torch.manual_seed(seed)
    first, blocks = family(s_spec).student_blocks(teacher.spec, s_spec)
    widths = s_spec.boundary_widths()[first:]
    parts = GraftParts.around(teacher.widths, first, blocks, widths).to(next(teacher.parameters()).device)
    return start_parts(teacher, parts, init, x)


def start_parts(teacher: BlockNet, parts: GraftParts, init: str, x: torch.Tensor | None, inherit_block=None,
                groups=None) -> GraftParts:
    """`parts` as `init` starts them: as they are ("random", the paper), or copied from the teacher's blocks
    restricted to the kept channels ("teacher"; "teacher_fit" also fits each exit map on `x`), through the
    teacher family's `inherit_block` or yours (nbgraft.models.inherit)."""
    if init in ("teacher", "teacher_fit"):
        if parts.widths is None:
            raise ValueError("init from the teacher needs GraftParts built with GraftParts.around")
        parts.set_adapter_maps(inherit(teacher, parts.first, parts.blocks, parts.widths, x, inherit_block, groups,
                                       fit=init == "teacher_fit"))
    elif init != "random":
        raise ValueError(f"unknown init {init!r}; use 'random' (the paper), 'teacher' or 'teacher_fit'")
    return parts
