"""CIFAR ResNets (He et al. 2016: ResNet-20/32/44/56/110) as grafting units, and the published weights.

The network: conv3x3 + BN + ReLU (the stem), three stages of n = (depth - 2) / 6 basic blocks at
16/32/64 channels (stride 2 entering stages 2 and 3), global average pool and a linear layer (the
head). Teacher shortcuts are "option A": stride-2 subsampling and zero-padded channels, no parameters.

Grafting units: the stem, each stage cut into `units_per_stage` groups of consecutive blocks, and
the head. A student gives any stage another width; its units have no BatchNorm. A student block
whose shortcut changes shape in any way other than the teacher's (e.g. a stride-2 block whose
channels do not double) uses a 1x1 conv shortcut instead of option A, and so does every
shape-changing shortcut of a student, so that a student started from the teacher can carry the
teacher's option-A map restricted to the channels it keeps.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import BlockNet, fold_bn, init_weights, load_state

DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ResNetSpec:
    depth: int = 56
    widths: tuple[int, ...] = (16, 32, 64)  # residual stream of each stage
    num_classes: int = 10
    mids: tuple[int, ...] | None = None  # inner width of each stage's blocks (None: the stream's)
    batch_norm: bool = True
    units_per_stage: int = 3
    shortcut: str = "A"  # "A": option A (teacher); "conv": 1x1 conv where the shape changes (student)
    stem_width: int = 16
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    family: str = "resnet"
    unit_blocks: tuple[int, ...] | None = None  # residual blocks kept in each unit of each stage (None: all of them)

    def __post_init__(self):
        if self.depth not in DEPTHS and ((self.depth - 2) % 6 or self.depth < 8):
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (e.g. {DEPTHS}), got {self.depth}")
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"a CIFAR ResNet has three stage widths, got {self.widths}")
        if self.mids is not None and (len(self.mids) != 3 or min(self.mids) < 1):
            raise ValueError(f"a CIFAR ResNet has three inner widths, got {self.mids}")
        if self.shortcut not in ("A", "conv"):
            raise ValueError(f"shortcut must be 'A' or 'conv', got {self.shortcut!r}")
        if self.unit_blocks is not None and (len(self.unit_blocks) != 3 or min(self.unit_blocks) < 1):
            raise ValueError(f"unit_blocks gives the blocks kept in each unit of the three stages (at least one), "
                             f"got {self.unit_blocks}")

    def cache_fields(self) -> dict:
        """The fields a cache key holds: `unit_blocks` only when set, so every key made before it existed stays."""
        out = asdict(self)
        if out["unit_blocks"] is None:
            del out["unit_blocks"]
        return out

    def mid(self, stage: int) -> int:
        return self.widths[stage] if self.mids is None else self.mids[stage]

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6

    def unit_sizes(self, stage: int | None = None) -> list[int]:
        """Blocks in each unit of a stage (as equal as possible, larger first); of `stage`, as many as it keeps."""
        n, u = self.blocks_per_stage, min(self.units_per_stage, self.blocks_per_stage)
        sizes = [n // u + (1 if k < n % u else 0) for k in range(u)]
        if stage is None or self.unit_blocks is None:
            return sizes
        return [min(size, self.unit_blocks[stage]) for size in sizes]

    def layout(self) -> list[tuple]:
        """("stem",), ("stage", s, first block, n blocks) ..., ("head",): what each grafting unit is."""
        units: list[tuple] = [("stem",)]
        for s in range(3):
            start = 0
            for size in self.unit_sizes(s):
                units.append(("stage", s, start, size))
                start += size
        units.append(("head",))
        return units

    def boundary_widths(self) -> tuple[int, ...]:
        widths = [3, self.stem_width]
        for unit in self.layout()[1:-1]:
            widths.append(self.widths[unit[1]])
        return (*widths, self.num_classes)


SPEC = ResNetSpec


def teacher_spec(depth: int = 56, num_classes: int = 10, **kw) -> ResNetSpec:
    return ResNetSpec(depth=depth, num_classes=num_classes, **kw)


def student_spec(teacher: ResNetSpec, widths: tuple[int, ...] | None = None,
                 mids: tuple[int, ...] | None = None, unit_blocks: tuple[int, ...] | None = None) -> ResNetSpec:
    """The stream widths of each stage (`widths`), the inner widths of their blocks (`mids`, the first
    conv's output) and the residual blocks each unit of a stage keeps (`unit_blocks`: fewer blocks make a student
    faster, where thinner ones barely are; which blocks is chosen on the few-shot images, see `inherit_block`).
    Any option given: the teacher's for the others. None given, the default: the teacher's streams, stage 3's
    blocks thinned inside to 7/16 of their width (64 -> 28 channels in a ResNet-56: 42% fewer parameters, folded),
    the widest multiple of 4 that keeps the 40% saving chapter 8 aims at; on the validation pool (seed 0) it beat 24 channels by 1.0 point
    at N=10 and 2.6 at N=1. Width buys fidelity at a parameter cost (validation pool, N=10, seed 0: inner width
    20 / 24 / 28 / 36 / 48 -> 92.5 / 96.0 / 97.0 / 98.3 / 99.6 %, 52 / 47 / 42.5 / 33 / 19 % fewer parameters).
    No BatchNorm; shape-changing shortcuts are 1x1 convs."""
    if widths is None and mids is None and unit_blocks is None:
        mids = (*teacher.widths[:2], teacher.widths[2] * 7 // 16)
    widths = tuple(widths) if widths is not None else teacher.widths
    return replace(teacher, widths=tuple(int(w) for w in widths), mids=None if mids is None else tuple(mids),
                   batch_norm=False, shortcut="conv",
                   unit_blocks=None if unit_blocks is None else tuple(int(b) for b in unit_blocks))


class OptionA(nn.Module):
    """Stride-2 subsampling, then the new channels as zeros split evenly before and after."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, c_out - c_in
        if self.pad < 0 or self.pad % 2:
            raise ValueError(f"option A shortcuts widen by an even number of channels, not {c_in} -> {c_out}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool, shortcut: str, mid: int | None = None):
        super().__init__()
        mid = mid or c_out
        self.conv1 = nn.Conv2d(c_in, mid, 3, stride, 1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(mid) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(mid, c_out, 3, 1, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = OptionA(c_in, c_out, stride)
        else:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Stem(nn.Sequential):
    def __init__(self, width: int, batch_norm: bool):
        super().__init__(nn.Conv2d(3, width, 3, 1, 1, bias=not batch_norm),
                         nn.BatchNorm2d(width) if batch_norm else nn.Identity(), nn.ReLU(inplace=True))


class Head(nn.Sequential):
    def __init__(self, c_in: int, num_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


def build_unit(spec: ResNetSpec, k: int) -> nn.Module:
    unit = spec.layout()[k]
    if unit[0] == "stem":
        return Stem(spec.stem_width, spec.batch_norm)
    if unit[0] == "head":
        return Head(spec.widths[-1], spec.num_classes)
    _, s, start, size = unit
    blocks = []
    for b in range(start, start + size):
        c_in = (spec.stem_width if s == 0 else spec.widths[s - 1]) if b == 0 else spec.widths[s]
        stride = 2 if (b == 0 and s > 0) else 1
        blocks.append(BasicBlock(c_in, spec.widths[s], stride, spec.batch_norm, spec.shortcut, spec.mid(s)))
    return nn.Sequential(*blocks)


def _init(unit: nn.Module) -> None:
    """He init; without BatchNorm each residual branch starts at zero, so a deep BN-free stack starts stable."""
    init_weights(unit)
    for m in unit.modules():
        if isinstance(m, BasicBlock) and isinstance(m.bn2, nn.Identity):
            nn.init.zeros_(m.conv2.weight)
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5)


def build(spec: ResNetSpec, init: bool = True) -> BlockNet:
    units = [build_unit(spec, k) for k in range(len(spec.layout()))]
    if init:
        for u in units:
            _init(u)
    return BlockNet(units, spec.boundary_widths(), spec)


def first_grafted(teacher: ResNetSpec, student: ResNetSpec) -> int:
    """The first unit whose widths differ (entering or leaving it); from there on every unit is the student's."""
    if (teacher.depth, teacher.num_classes, teacher.units_per_stage) != (student.depth, student.num_classes,
                                                                         student.units_per_stage):
        raise ValueError("teacher and student must share depth, classes and units per stage")
    tw, sw = teacher.boundary_widths(), student.boundary_widths()
    for k, (unit, s_unit) in enumerate(zip(teacher.layout()[:-1], student.layout())):
        inner = unit[0] == "stage" and (teacher.mid(unit[1]) != student.mid(unit[1]) or unit[3] != s_unit[3])
        if tw[k] != sw[k] or tw[k + 1] != sw[k + 1] or inner:
            return k
    return len(tw) - 2  # same widths everywhere: only the head is the student's own


def student_blocks(teacher: ResNetSpec, student: ResNetSpec) -> tuple[int, list[nn.Module]]:
    first = first_grafted(teacher, student)
    units = [build_unit(student, k) for k in range(first, len(student.layout()))]
    for u in units:
        _init(u)
    return first, units


# --------------------------------------------------------------------------- starting from the teacher
def stream_groups(spec: ResNetSpec) -> list[list[int]]:
    """Boundaries on one residual stream (a stage's, the stem's output joining stage 1's): identity
    shortcuts carry channel c to channel c, so a thin student must keep the same channels along it."""
    groups: dict[int, list[int]] = {0: [1]}
    for k, unit in enumerate(spec.layout()):
        if unit[0] == "stage":
            groups.setdefault(unit[1], []).append(k + 1)
    return list(groups.values())


def _copy_conv(dst: nn.Conv2d, w: torch.Tensor, b: torch.Tensor, rows, cols) -> None:
    dst.weight.copy_(w[rows][:, cols].to(dst.weight.dtype))
    dst.bias.copy_(b[rows].to(dst.bias.dtype))


def _conv_bn(conv: nn.Conv2d, bn: nn.Module, h: torch.Tensor | None) -> tuple:
    w, b = fold_bn(conv.weight, conv.bias, bn)
    out = None if h is None else F.conv2d(h, w, b, conv.stride, conv.padding)
    return w, b, out


@torch.no_grad()
def kept_blocks(t_unit: nn.Sequential, n: int, x_in: torch.Tensor | None = None) -> list[int]:
    """Which `n` of a teacher unit's residual blocks a student unit keeps (their indices, in order).

    A block that changes the stream's shape (the first of stages 2 and 3) is always kept. Of the others, those
    dropped are the ones without which the unit's output moves least on `x_in` (the teacher's activations entering
    the unit on the few-shot images: relative squared error, every such subset tried, or one block at a time past
    MAX_SUBSETS): a rule computed on the N images alone, as PRACTISE (Wang et al., CVPR 2023) chooses which
    blocks to drop by what the rest keeps. Without images, the last blocks go."""
    blocks = list(t_unit)
    droppable = [j for j, b in enumerate(blocks) if isinstance(b.shortcut, nn.Identity)]
    k = len(blocks) - n
    if k <= 0:
        return list(range(len(blocks)))
    if k > len(droppable):
        raise ValueError(f"a unit of {len(blocks)} blocks can keep no fewer than {len(blocks) - len(droppable)} "
                         f"(its first changes the stream's shape), not {n}")
    if x_in is None:
        dropped = droppable[-k:]
    else:
        h = x_in.float()

        def moved(skip) -> float:
            out = h
            for j, b in enumerate(blocks):
                if j not in skip:
                    out = b(out)
            return ((out - full).pow(2).sum() / full.pow(2).sum().clamp_min(1e-12)).item()

        full = t_unit(h)
        if math.comb(len(droppable), k) <= MAX_SUBSETS:
            dropped = min(itertools.combinations(droppable, k), key=moved)
        else:
            dropped = ()
            for _ in range(k):
                dropped = min(((*dropped, j) for j in droppable if j not in dropped), key=moved)
    return [j for j in range(len(blocks)) if j not in dropped]


MAX_SUBSETS = 256  # subsets of blocks to drop tried exhaustively in one unit (more: one block at a time)


@torch.no_grad()
def inherit_block(t_unit: nn.Module, s_unit: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor,
                  x_in: torch.Tensor | None = None) -> None:
    """Start a BN-free student unit as its teacher unit restricted to the kept channels.

    The residual stream keeps `keep_out` throughout the unit; each block's inner channels are those
    most active on `x_in` (the teacher's activations entering the unit) if given, else the filters of
    largest norm. Shape-changing shortcuts (1x1 convs in the student) take the teacher's option-A map
    restricted to the kept channels. A student unit with fewer blocks starts from the teacher blocks
    `kept_blocks` chooses on `x_in`. With every channel and block kept, the unit computes the teacher's exactly.
    """
    if any(isinstance(m, nn.BatchNorm2d) for m in s_unit.modules()):
        raise ValueError("starting from the teacher needs a student unit without BatchNorm")
    h = None if x_in is None else x_in.double()
    if isinstance(t_unit, Head):
        s_unit[2].weight.copy_(t_unit[2].weight[:, keep_in])
        s_unit[2].bias.copy_(t_unit[2].bias)
        return
    if isinstance(t_unit, Stem):
        w, b = fold_bn(t_unit[0].weight, t_unit[0].bias, t_unit[1])
        _copy_conv(s_unit[0], w, b, keep_out, keep_in)
        return
    prev = keep_in
    for tb, sb in zip([t_unit[j] for j in kept_blocks(t_unit, len(s_unit), x_in)], s_unit):
        w1, b1, mid = _conv_bn(tb.conv1, tb.bn1, h)
        score = (F.relu(mid).mean((0, 2, 3)) if mid is not None else w1.abs().sum((1, 2, 3)))
        inner = torch.sort(torch.topk(score, sb.conv1.out_channels).indices).values
        _copy_conv(sb.conv1, w1, b1, inner, prev)
        w2, b2, _ = _conv_bn(tb.conv2, tb.bn2, None)
        _copy_conv(sb.conv2, w2, b2, keep_out, inner)
        if isinstance(sb.shortcut, nn.Conv2d):
            sb.shortcut.weight.zero_()
            sb.shortcut.bias.zero_()
            t_in = tb.conv1.in_channels
            offset = (tb.conv1.out_channels - t_in) // 2 if isinstance(tb.shortcut, OptionA) else 0
            for k, c_out in enumerate(keep_out.tolist()):
                hits = (prev == c_out - offset).nonzero().flatten()
                if len(hits):
                    sb.shortcut.weight[k, hits[0], 0, 0] = 1.0
        if h is not None:
            h = tb(h.float()).double()
        prev = keep_out


def branch_ends(t_unit: nn.Module, s_unit: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(student conv, the teacher module whose output it should rebuild) for the last conv of every residual
    block thinned inside: the student's conv2 against the teacher's bn2 (the branch before the residual sum).
    Where FSKD fits and merges its maps in a student that keeps the streams (nbgraft.methods.fskd)."""
    if isinstance(t_unit, (Stem, Head)):
        return []
    if len(t_unit) != len(s_unit):
        raise ValueError("FSKD fits one map per residual block: it needs a student that keeps the teacher's blocks "
                         "(no unit_blocks)")
    return [(sb.conv2, tb.bn2) for tb, sb in zip(t_unit, s_unit)
            if sb.conv1.out_channels < tb.conv1.out_channels and sb.conv2.out_channels == tb.conv2.out_channels]


# --------------------------------------------------------------------------- published weights
PUBLISHED = {
    # Yerlan Idelbayev, akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), file resnet56-4bfd9763.th.
    "resnet56": {"depth": 56, "md5": "48a2383e717f38f02934658ab8d4d9a2", "file": "resnet56-4bfd9763.th",
                 "test_accuracy": 93.39},
}


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def published_state(spec: ResNetSpec, raw: dict) -> dict:
    """The published checkpoint's keys (`module.layerS.B.conv1.weight`, ...) renamed to this BlockNet's."""
    layout = spec.layout()
    where = {}
    for k, unit in enumerate(layout):
        if unit[0] == "stage":
            _, s, start, size = unit
            for b in range(start, start + size):
                where[(s, b)] = (k, b - start)
    out = {}
    for key, value in raw.items():
        name = key.removeprefix("module.")
        parts = name.split(".")
        if parts[0] in ("conv1", "bn1"):
            out[f"blocks.0.{0 if parts[0] == 'conv1' else 1}.{'.'.join(parts[1:])}"] = value
        elif parts[0] == "linear":
            out[f"blocks.{len(layout) - 1}.2.{parts[1]}"] = value
        elif parts[0].startswith("layer"):
            s, b = int(parts[0][5:]) - 1, int(parts[1])
            if (s, b) not in where:
                raise ValueError(f"the checkpoint has block {name!r}, which a ResNet-{spec.depth} does not")
            k, j = where[(s, b)]
            out[f"blocks.{k}.{j}.{'.'.join(parts[2:])}"] = value
        else:
            out[name] = value  # left for load_state to report as unexpected
    return out


def checkpoint_depth(raw: dict) -> int:
    """The depth 6n + 2 of a CIFAR ResNet checkpoint, from the blocks of its first stage."""
    names = (k.removeprefix("module.") for k in raw)
    blocks = {int(name.split(".")[1]) for name in names if name.startswith("layer1.")}
    if not blocks:
        raise ValueError("it has no layer1.* weights: not a CIFAR ResNet checkpoint in this format")
    return 6 * (max(blocks) + 1) + 2


def load_checkpoint(path: str | Path, depth: int | None = None, md5: str | None = None) -> BlockNet:
    """A CIFAR ResNet of any depth 6n + 2 (He et al. 2016, option-A shortcuts) from a checkpoint in the published
    format (`{"state_dict": ...}` or the state dict itself, keys with or without `module.`), as an eval-mode
    BlockNet. Checked in order: the md5 (if given), the depth the file holds against `depth` (if given), then
    every weight's name and shape. The classes are read from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if md5 is not None and (digest := file_md5(path)) != md5:
        raise ValueError(f"{path} has md5 {digest}, expected {md5}: the file is truncated, damaged or another "
                         "network's; fetch it again")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} could not be read as a checkpoint ({type(err).__name__}: {err})") from None
    raw = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds no state dict")
    try:
        found = checkpoint_depth(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if depth is not None and depth != found:
        raise ValueError(f"{path} holds a ResNet-{found} ({(found - 2) // 6} blocks per stage), not a ResNet-{depth}: "
                         f"use arch resnet{found}")
    linear = raw.get("module.linear.weight", raw.get("linear.weight"))
    spec = teacher_spec(found, int(linear.shape[0]) if linear is not None else 10)
    net = build(spec, init=False)
    state = published_state(spec, raw)
    for key in net.state_dict():  # saved before BatchNorm counted its batches
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0)
    load_state(net, state, f"checkpoint {path}")
    return net.eval()


def load_published(name: str, path: str | Path) -> BlockNet:
    """A published CIFAR ResNet (PUBLISHED) from its checkpoint file, checked (md5, depth, architecture)."""
    if name not in PUBLISHED:
        raise ValueError(f"no published weights named {name!r}; nbgraft knows {', '.join(PUBLISHED)}")
    info, path = PUBLISHED[name], Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the {name} weights are not at {path}: put {info['file']} there (see the README, "
                                "'The published teacher'), or set NBGRAFT_TEACHERS to the folder that holds it")
    return load_checkpoint(path, info["depth"], info["md5"])
