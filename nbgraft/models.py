"""Block-wise VGG16 for 32x32 inputs: five conv blocks ending in max-pool, then a classifier block.

This is the NetGraft CIFAR variant: 3x3 convs with ReLU, classifier Linear -> BatchNorm1d -> Linear.
The student has the same blocks with other widths (by default blocks 4 and 5 at half width, which
also halves the classifier's input).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_HIDDEN = 512
NUM_BLOCKS = 6  # 5 conv blocks + the classifier block


@dataclass(frozen=True)
class VGGSpec:
    """Everything needed to rebuild a network (and to check a checkpoint fits it)."""

    widths: tuple[int, ...]
    hidden: int
    num_classes: int
    batch_norm: bool = False
    depths: tuple[int, ...] = VGG16_DEPTHS

    def out_width(self, block: int) -> int:
        """Channels leaving `block` (the classifier's are the logits)."""
        return self.widths[block] if block < len(self.widths) else self.num_classes

    def in_width(self, block: int) -> int:
        return 3 if block == 0 else self.widths[block - 1]


def teacher_spec(num_classes: int, width: float = 1.0, batch_norm: bool = False) -> VGGSpec:
    return VGGSpec(tuple(max(1, round(w * width)) for w in VGG16_WIDTHS), max(1, round(VGG16_HIDDEN * width)),
                   num_classes, batch_norm)


def student_spec(teacher: VGGSpec, widths: tuple[int, ...] | None = None) -> VGGSpec:
    """Default: the paper's student, blocks 4 and 5 at half the teacher's width."""
    if widths is None:
        t = teacher.widths
        widths = (t[0], t[1], t[2], t[3] // 2, t[4] // 2)
    if len(widths) != len(teacher.widths) or min(widths) < 1:
        raise ValueError(f"student widths must be {len(teacher.widths)} positive ints, got {widths}")
    return VGGSpec(tuple(int(w) for w in widths), teacher.hidden, teacher.num_classes, teacher.batch_norm,
                   teacher.depths)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, depth: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class ClassifierBlock(nn.Sequential):
    """Takes the (B, C, 1, 1) map of block 5, so a 1x1 adapter conv can sit in front of it."""

    def __init__(self, c_in: int, hidden: int, num_classes: int):
        super().__init__(nn.Flatten(), nn.Linear(c_in, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, num_classes))


class BlockVGG(nn.Module):
    """`blocks[0..4]` conv blocks, `blocks[5]` the classifier; run any contiguous range of them."""

    def __init__(self, spec: VGGSpec, init: bool = True):
        super().__init__()
        self.spec = spec
        blocks = [ConvBlock(spec.in_width(i), spec.widths[i], spec.depths[i], spec.batch_norm) for i in range(5)]
        blocks.append(ClassifierBlock(spec.widths[-1], spec.hidden, spec.num_classes))
        self.blocks = nn.ModuleList(blocks)
        if init:
            init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, 0, NUM_BLOCKS)

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


def init_weights(model: nn.Module) -> None:
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


def load_state(model: nn.Module, state: dict, what: str) -> None:
    """load_state_dict with an error that says which checkpoint does not fit which architecture."""
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
            "width or data set: rebuild the model from the checkpoint's own spec, or delete the stale cache entry."
        )
    model.load_state_dict(state)
