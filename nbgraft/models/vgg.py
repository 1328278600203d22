"""The paper's VGG16 for 32x32 inputs as six grafting blocks: five conv blocks ending in max-pool, then the classifier.

This is the NetGraft CIFAR variant: 3x3 convs with ReLU, teacher classifier Linear -> BatchNorm1d -> Linear.
Its student (the paper's) has blocks 4 and 5 at half width and no BatchNorm of its own: conv blocks of
conv + ReLU, classifier Linear -> Linear. A profile may give the teacher BN in its conv blocks (trained
faster on a CPU); the student keeps the teacher's blocks before the first thin one, BN included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from . import BlockNet, fold_bn, init_weights

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_HIDDEN = 512


@dataclass(frozen=True)
class VGGSpec:
    """Everything needed to rebuild a network (and to check a checkpoint fits it)."""

    widths: tuple[int, ...]
    hidden: int
    num_classes: int
    batch_norm: bool = False  # BN after each conv of the conv blocks
    depths: tuple[int, ...] = VGG16_DEPTHS
    classifier_bn: bool = True  # the teacher's classifier has BN1d, the paper's student's has none
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # input normalisation the network expects
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    family: str = "vgg"

    def boundary_widths(self) -> tuple[int, ...]:
        """Channels entering each of the six blocks, then the logits."""
        return (3, *self.widths, self.num_classes)


SPEC = VGGSpec


def teacher_spec(num_classes: int, width: float = 1.0, batch_norm: bool = False, mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25)) -> VGGSpec:
    return VGGSpec(tuple(max(1, round(w * width)) for w in VGG16_WIDTHS), max(1, round(VGG16_HIDDEN * width)),
                   num_classes, batch_norm, mean=tuple(mean), std=tuple(std))


def student_spec(teacher: VGGSpec, widths: tuple[int, ...] | None = None, batch_norm: bool = False) -> VGGSpec:
    """Default: the paper's student, blocks 4 and 5 at half the teacher's width, no BatchNorm.

    `batch_norm` gives the student's own conv blocks BN (the blocks it keeps from the teacher keep theirs)."""
    if widths is None:
        t = teacher.widths
        widths = (t[0], t[1], t[2], t[3] // 2, t[4] // 2)
    if len(widths) != len(teacher.widths) or min(widths) < 1:
        raise ValueError(f"student widths must be {len(teacher.widths)} positive ints, got {widths}")
    return VGGSpec(tuple(int(w) for w in widths), teacher.hidden, teacher.num_classes, batch_norm, teacher.depths,
                   classifier_bn=False, mean=teacher.mean, std=teacher.std)


class _ChannelsLastMaxPool(torch.autograd.Function):
    """max_pool2d through PyTorch's channels-last CPU kernel, gradient scattered by the same indices."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        args = (kernel, stride, padding, dilation, ceil_mode)
        y, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), *args)
        # back to the usual strides, also where contiguous() would keep channels-last ones ((B, C, 1, 1) maps)
        y, idx = (t.clone(memory_format=torch.contiguous_format) for t in (y, idx))
        ctx.save_for_backward(x, idx)
        ctx.args = args
        return y

    @staticmethod
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        return (torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.args, idx),
                None, None, None, None, None)


# True inside vmap/grad transforms, where an autograd.Function without a vmap rule cannot run (a torch without
# this probe gets PyTorch's pooling everywhere).
_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


class MaxPool(nn.MaxPool2d):
    """nn.MaxPool2d with the same values, indices and gradients, faster on the CPU, where PyTorch's NCHW
    kernel is slow for narrow layers: forward + backward 1.4-2.7x faster at the VGG's shapes
    (benchmarks/bench_cpu.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or self.return_indices
                or _transforms_active()):  # under vmap (the stacked engine) PyTorch's own
            return super().forward(x)
        args = (list(_pair(v)) for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        return _ChannelsLastMaxPool.apply(x, *args, self.ceil_mode)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, depth: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(MaxPool(2))
        super().__init__(*layers)


class ClassifierBlock(nn.Sequential):
    """Takes the (B, C, 1, 1) map of block 5, so a 1x1 adapter can sit in front of it."""

    def __init__(self, c_in: int, hidden: int, num_classes: int, batch_norm: bool = True):
        mid = [nn.BatchNorm1d(hidden)] if batch_norm else []
        super().__init__(nn.Flatten(), nn.Linear(c_in, hidden), *mid, nn.Linear(hidden, num_classes))


def build_block(spec: VGGSpec, i: int, own: bool = True) -> nn.Module:
    """Block i of `spec`; `own=False` builds it as a teacher block (BN as the teacher has it)."""
    if i < len(spec.widths):
        c_in = 3 if i == 0 else spec.widths[i - 1]
        return ConvBlock(c_in, spec.widths[i], spec.depths[i], spec.batch_norm)
    return ClassifierBlock(spec.widths[-1], spec.hidden, spec.num_classes, spec.classifier_bn)


def build(spec: VGGSpec, init: bool = True) -> BlockNet:
    net = BlockNet([build_block(spec, i) for i in range(len(spec.widths) + 1)], spec.boundary_widths(), spec)
    if init:
        init_weights(net)
    return net


def first_grafted(teacher: VGGSpec, student: VGGSpec) -> int:
    """Blocks before the first width change are the teacher's own; grafting starts there."""
    if (teacher.num_classes, teacher.depths) != (student.num_classes, student.depths):
        raise ValueError("teacher and student must share depths and number of classes")
    for i, (wt, ws) in enumerate(zip(teacher.widths, student.widths)):
        if wt != ws:
            return i
    return len(teacher.widths)  # same conv widths: only the classifier is the student's own


def student_blocks(teacher: VGGSpec, student: VGGSpec) -> tuple[int, list[nn.Module]]:
    """(first, the student's own blocks first..classifier), freshly initialised."""
    first = first_grafted(teacher, student)
    blocks = [build_block(student, i) for i in range(first, len(student.widths) + 1)]
    for b in blocks:
        init_weights(b)
    return first, blocks


# --------------------------------------------------------------------------- starting from the teacher
def stream_groups(spec: VGGSpec) -> list:
    """No residual streams: each boundary's channels are chosen on their own."""
    return []


def _layers(block: nn.Sequential, kind) -> list[tuple[nn.Module, nn.Module | None]]:
    """(layer, the BatchNorm right after it or None) for every `kind` layer of a block."""
    mods = list(block)
    out = []
    for k, m in enumerate(mods):
        if isinstance(m, kind):
            nxt = mods[k + 1] if k + 1 < len(mods) else None
            out.append((m, nxt if isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d)) else None))
    return out


@torch.no_grad()
def inherit_block(t_block: nn.Module, s_block: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor,
                  x_in: torch.Tensor | None = None) -> None:
    """Start a BN-free student block as its teacher block restricted to kept channels.

    keep_in / keep_out: teacher channel indices kept at the block's input / output. Inner channels
    of a conv block: those most active on `x_in` (the teacher's activations entering the block) if
    given, else the filters of largest norm. The teacher's BatchNorm is folded into the convs, so
    with every channel kept the student computes exactly what the teacher block computes (eval mode).
    """
    if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in s_block.modules()):
        raise ValueError("starting from the teacher needs a student block without BatchNorm")
    if isinstance(t_block, ClassifierBlock):
        (l1, bn), (l2, _) = _layers(t_block, nn.Linear)
        (s1, _), (s2, _) = _layers(s_block, nn.Linear)
        w, b = fold_bn(l1.weight, l1.bias, bn)
        s1.weight.copy_(w[:, keep_in].to(s1.weight.dtype))
        s1.bias.copy_(b.to(s1.bias.dtype))
        s2.weight.copy_(l2.weight[keep_out] if len(keep_out) != l2.out_features else l2.weight)
        s2.bias.copy_(l2.bias[keep_out] if len(keep_out) != l2.out_features else l2.bias)
        return
    t_convs, s_convs = _layers(t_block, nn.Conv2d), _layers(s_block, nn.Conv2d)
    if len(t_convs) != len(s_convs):
        raise ValueError(f"teacher block has {len(t_convs)} convs, student block {len(s_convs)}")
    h = x_in
    prev = keep_in
    for k, ((tc, bn), (sc, _)) in enumerate(zip(t_convs, s_convs)):
        w, b = fold_bn(tc.weight, tc.bias, bn)
        if k == len(t_convs) - 1:
            keep = keep_out
        else:
            if h is not None:
                score = torch.relu(nn.functional.conv2d(h.double(), w, b, padding=tc.padding)).mean((0, 2, 3))
            else:
                score = w.abs().sum((1, 2, 3))
            keep = torch.sort(torch.topk(score, sc.out_channels).indices).values
        if h is not None:
            h = torch.relu(nn.functional.conv2d(h.double(), w, b, padding=tc.padding))
        sc.weight.copy_(w[keep][:, prev].to(sc.weight.dtype))
        sc.bias.copy_(b[keep].to(sc.bias.dtype))
        prev = keep
