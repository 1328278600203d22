"""Network grafting (NetGraft, Shen et al. AAAI 2021), the method itself.

The student differs from the teacher from some block `first` on (the paper: blocks 4, 5 and the
classifier). Each of those student blocks j comes with two 1x1 adapter convs:
`t2s[j]` maps teacher-width activations to the student block's input width, `s2t[j]` maps its
output back to teacher width. Where widths agree an adapter is the identity.

Stage 1, block grafting: put (t2s[j], student block j, s2t[j]) in place of teacher block j, freeze
everything else, and train so the hybrid's logits match the teacher's. The blocks do not depend on
each other, so one teacher pass per batch gives the target and every block's input, and all blocks
train side by side (`joint=True`), bit-for-bit the same as one after the other (`joint=False`).

Stage 2, progressive net grafting: chain student blocks first..first+k (the adapter pair between two
student blocks stays, trainable), graft the chain, fine-tune it, grow k until the chain reaches the
classifier. The result, with each adapter pair folded into one 1x1 conv, is the standalone student.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .device import autocast
from .models import NUM_BLOCKS, BlockVGG, ClassifierBlock, ConvBlock, VGGSpec, init_weights
from .profiles import GraftSchedule
from .training import generator, progress


# --------------------------------------------------------------------------- adapters
def adapter(c_in: int, c_out: int) -> nn.Module:
    """A trainable 1x1 conv from c_in to c_out channels, or the identity where they agree."""
    return nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, kernel_size=1)


def fold(first: nn.Module, second: nn.Module) -> nn.Module:
    """One module computing second(first(x)) for two 1x1 convs (either may be the identity)."""
    if isinstance(first, nn.Identity):
        return copy.deepcopy(second)
    if isinstance(second, nn.Identity):
        return copy.deepcopy(first)
    w1, b1 = first.weight.detach()[:, :, 0, 0], first.bias.detach()
    w2, b2 = second.weight.detach()[:, :, 0, 0], second.bias.detach()
    conv = nn.Conv2d(w1.shape[1], w2.shape[0], kernel_size=1).to(w1.device)
    with torch.no_grad():
        w = w2.double() @ w1.double()
        conv.weight.copy_(w[:, :, None, None].to(w1.dtype))
        conv.bias.copy_((w2.double() @ b1.double() + b2.double()).to(b1.dtype))
    return conv


# --------------------------------------------------------------------------- the grafted parts
class GraftParts(nn.Module):
    """The student blocks first..5 and the adapters around each: everything grafting trains."""

    def __init__(self, first: int, blocks: list[nn.Module], t2s: list[nn.Module], s2t: list[nn.Module]):
        super().__init__()
        if not (len(blocks) == len(t2s) == len(s2t) == NUM_BLOCKS - first):
            raise ValueError("need one block and two adapters per grafted position")
        self.first = first
        self.blocks, self.t2s, self.s2t = nn.ModuleList(blocks), nn.ModuleList(t2s), nn.ModuleList(s2t)

    @classmethod
    def for_student(cls, teacher: VGGSpec, student: VGGSpec) -> GraftParts:
        """Fresh student blocks from the first block whose width differs, with their adapters."""
        first = first_grafted_block(teacher, student)
        blocks, t2s, s2t = [], [], []
        for i in range(first, NUM_BLOCKS):
            if i < 5:
                blocks.append(ConvBlock(student.in_width(i), student.widths[i], student.depths[i], student.batch_norm))
            else:
                blocks.append(ClassifierBlock(student.widths[-1], student.hidden, student.num_classes))
            t2s.append(adapter(teacher.in_width(i), student.in_width(i)))
            s2t.append(adapter(student.out_width(i), teacher.out_width(i)))
        parts = cls(first, blocks, t2s, s2t)
        init_weights(parts)
        return parts

    @property
    def positions(self) -> list[int]:
        """The teacher block index of each grafted student block."""
        return list(range(self.first, NUM_BLOCKS))

    def chain(self, a: int, b: int) -> nn.Sequential:
        """Student blocks a..b (teacher indices, inclusive) with their adapters, as one module."""
        mods: list[nn.Module] = [self.t2s[a - self.first]]
        for i in range(a, b + 1):
            j = i - self.first
            mods.append(self.blocks[j])
            if i < b:
                mods += [self.s2t[j], self.t2s[j + 1]]
        mods.append(self.s2t[b - self.first])
        return nn.Sequential(*mods)

    def chain_params(self, a: int, b: int) -> tuple[list, list]:
        """(block parameters, adapter parameters) of the chain a..b."""
        js = range(a - self.first, b - self.first + 1)
        blocks = [p for j in js for p in self.blocks[j].parameters()]
        adapters = [p for j in js for m in (self.t2s[j], self.s2t[j]) for p in m.parameters()]
        return blocks, adapters


def first_grafted_block(teacher: VGGSpec, student: VGGSpec) -> int:
    """Blocks before the first width change are the teacher's own; grafting starts there."""
    if (teacher.num_classes, teacher.depths) != (student.num_classes, student.depths):
        raise ValueError("teacher and student must share depths and number of classes")
    for i, (wt, ws) in enumerate(zip(teacher.widths, student.widths)):
        if wt != ws:
            return i
    return NUM_BLOCKS - 1  # same conv widths: only the classifier is the student's own


class Grafted(nn.Module):
    """The teacher with its blocks a..b replaced by the student chain a..b."""

    def __init__(self, teacher: BlockVGG, parts: GraftParts, a: int, b: int):
        super().__init__()
        self.teacher, self.parts, self.a, self.b = teacher, parts, a, b
        self.scion = parts.chain(a, b)

    def train(self, mode: bool = True) -> Grafted:
        """Only the scion changes mode: the teacher stays in eval (its BN statistics are fixed)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_boundary(self.teacher.run(x, 0, self.a))

    def from_boundary(self, h: torch.Tensor) -> torch.Tensor:
        """From the teacher's activation entering block a."""
        return self.teacher.run(self.scion(h), self.b + 1, NUM_BLOCKS)


# --------------------------------------------------------------------------- losses
def graft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "nmse",
               temperature: float = 4.0) -> torch.Tensor:
    """nmse: squared distance of L2-normalised logits (the paper); kl: Hinton KD; mse: plain."""
    if kind == "nmse":
        return (F.normalize(student_logits, dim=1) - F.normalize(teacher_logits, dim=1)).pow(2).sum(1).mean()
    if kind == "kl":
        t = temperature
        return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                        reduction="batchmean") * t * t
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    raise ValueError(f"unknown grafting loss {kind!r}; use 'nmse', 'kl' or 'mse'")


# --------------------------------------------------------------------------- training
@dataclass
class StageLog:
    """Per-epoch mean loss of every trained unit, and the wall time of the stage."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0


def _epoch_batches(x: torch.Tensor, batch_size: int, seed: int, epoch: int, augment: bool):
    """The same shuffled (and augmented) batches for a given (seed, epoch), whoever asks."""
    gen = generator(seed * 1_000_003 + epoch, x.device)
    for b in D.batches(len(x), batch_size, gen):
        b = b.to(x.device)
        yield b, (D.augment(x[b], gen) if augment else x[b])


class _TeacherCache:
    """Teacher activations at the boundaries grafting reads, computed once when augmentation is off."""

    def __init__(self, teacher: BlockVGG, x: torch.Tensor, starts: list[int], augment: bool):
        self.teacher, self.starts, self.augment = teacher, sorted(set(starts)), augment
        self.full = None if augment else self._compute(x)

    @torch.no_grad()
    def _compute(self, xb: torch.Tensor) -> dict[int, torch.Tensor]:
        out, h, prev = {}, xb, 0
        with autocast(xb.device):
            for s in self.starts:
                h = self.teacher.run(h, prev, s)
                out[s], prev = h, s
            out["logits"] = self.teacher.run(h, prev, NUM_BLOCKS).float()
        return out

    def get(self, b: torch.Tensor, xb: torch.Tensor) -> dict:
        return self._compute(xb) if self.full is None else {k: v[b] for k, v in self.full.items()}


def block_optimizer(parts, j: int, sched: GraftSchedule, shots: int) -> torch.optim.Adam:
    """Adam for the j-th grafted block of `parts` (GraftParts or a stack of them) and its adapters,
    at the schedule's block and adapter learning rates, scaled with N where the schedule says so."""
    i = parts.positions[j]
    blocks, adapters = parts.chain_params(i, i)
    scale = sched.lr_scale(shots)
    groups = [{"params": blocks, "lr": sched.block_lr_at(j) * scale},
              {"params": adapters, "lr": sched.block_adapter_lr * scale}]
    return torch.optim.Adam([g for g in groups if g["params"]])


def graft_blocks(teacher: BlockVGG, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
                 seed: int = 0, joint: bool = True) -> StageLog:
    """Stage 1: train every student block (with its adapters) alone inside the frozen teacher.

    `joint=True` trains all blocks from one teacher pass per batch; `joint=False` is the plain
    one-block-at-a-time loop with a teacher pass per block and step. Both see identical batches.
    """
    teacher.eval()
    parts.train()
    log = StageLog()
    positions = parts.positions
    epochs = {i: sched.block_epochs_at(j) for j, i in enumerate(positions)}
    positions = [i for i in positions if epochs[i] > 0]
    if not positions:
        return log
    opts = {i: block_optimizer(parts, j, sched, shots) for j, i in enumerate(parts.positions)}
    grafted = {i: Grafted(teacher, parts, i, i) for i in positions}
    bs = sched.batch_size(shots, teacher.spec.num_classes)
    cache = _TeacherCache(teacher, x, positions, sched.augment)
    t0 = time.perf_counter()
    groups_to_run = [positions] if joint else [[i] for i in positions]
    for group in groups_to_run:
        n_epochs = max(epochs[i] for i in group)
        for epoch in progress(range(n_epochs), desc=f"block stage {'+'.join(str(i + 1) for i in group)}"):
            active = [i for i in group if epoch < epochs[i]]
            sums = {i: 0.0 for i in active}
            for b, xb in _epoch_batches(x, bs, seed, epoch, sched.augment):
                acts = cache.get(b, xb)
                total = 0.0
                for i in active:
                    with autocast(x.device):
                        out = grafted[i].from_boundary(acts[i]).float()
                    loss = graft_loss(out, acts["logits"], sched.loss, sched.temperature)
                    sums[i] += loss.item() * len(b)
                    total = total + loss
                for i in active:
                    opts[i].zero_grad(set_to_none=True)
                total.backward()
                for i in active:
                    opts[i].step()
            for i in active:
                log.losses.setdefault(f"block{i + 1}", []).append(sums[i] / len(x))
    log.wall_s = time.perf_counter() - t0
    return log


def net_steps(parts: GraftParts, sched: GraftSchedule) -> list[tuple[int, int, int]]:
    """(a, b, epochs) of each net-stage step: the chain grows from two blocks to all of them."""
    first, last = parts.first, NUM_BLOCKS - 1
    if sched.net_mode == "all_at_once":
        return [(first, last, sum(sched.net_epochs))]
    if sched.net_mode != "progressive":
        raise ValueError(f"unknown net_mode {sched.net_mode!r}; use 'progressive' or 'all_at_once'")
    ends = range(first + 1, last + 1) if last > first else [last]
    return [(first, b, sched.net_epochs[min(k, len(sched.net_epochs) - 1)]) for k, b in enumerate(ends)]


def graft_net(teacher: BlockVGG, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
              seed: int = 0, on_step=None) -> StageLog:
    """Stage 2: graft the growing student chain and fine-tune it (blocks and inner adapters together).

    `on_step(a, b)` is called after each growth step (e.g. to evaluate the grafted network).
    """
    teacher.eval()
    parts.train()
    log = StageLog()
    scale = sched.lr_scale(shots)
    bs = sched.batch_size(shots, teacher.spec.num_classes)
    cache = _TeacherCache(teacher, x, [parts.first], sched.augment)
    t0 = time.perf_counter()
    for a, b, n_epochs in net_steps(parts, sched):
        blocks, adapters = parts.chain_params(a, b)
        groups = [{"params": blocks, "lr": sched.net_lr * scale}]
        if adapters:
            groups.append({"params": adapters, "lr": sched.net_adapter_lr * scale})
        opt = torch.optim.Adam(groups)
        model = Grafted(teacher, parts, a, b)
        name = f"chain{a + 1}-{b + 1}"
        for epoch in progress(range(n_epochs), desc=f"net stage {name}"):
            total = 0.0
            for bi, xb in _epoch_batches(x, bs, seed + 7919 * (b + 1), epoch, sched.augment):
                acts = cache.get(bi, xb)
                with autocast(x.device):
                    out = model.from_boundary(acts[a]).float()
                loss = graft_loss(out, acts["logits"], sched.loss, sched.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(bi)
            log.losses.setdefault(name, []).append(total / len(x))
        if on_step is not None:
            on_step(a, b)
    log.wall_s = time.perf_counter() - t0
    return log


# --------------------------------------------------------------------------- the standalone student
class Student(nn.Module):
    """The final student: conv blocks and classifier, with a 1x1 `bridge` conv after block i where
    the folded adapter pair s2t[i] -> t2s[i+1] sits. Rebuildable from the two specs alone."""

    def __init__(self, teacher: VGGSpec, student: VGGSpec, folded: bool = True):
        super().__init__()
        self.spec, self.folded = student, folded
        net = BlockVGG(student, init=False)
        self.blocks = net.blocks
        first = first_grafted_block(teacher, student)
        self.bridges = nn.ModuleDict()
        for i in range(first, 5):
            if teacher.widths[i] != student.widths[i]:
                ws, wt = student.widths[i], teacher.widths[i]
                self.bridges[str(i)] = (nn.Conv2d(ws, ws, 1) if folded else
                                        nn.Sequential(nn.Conv2d(ws, wt, 1), nn.Conv2d(wt, ws, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.bridges:
                x = self.bridges[str(i)](x)
        return x


def export_student(teacher: BlockVGG, parts: GraftParts, student_spec: VGGSpec, folded: bool = True) -> Student:
    """Copy the teacher's shared blocks and the grafted student blocks into a standalone Student."""
    s = Student(teacher.spec, student_spec, folded).to(next(parts.parameters()).device)
    for i in range(NUM_BLOCKS):
        src = teacher.blocks[i] if i < parts.first else parts.blocks[i - parts.first]
        s.blocks[i].load_state_dict(src.state_dict())
    for key, bridge in s.bridges.items():
        j = int(key) - parts.first
        pair = (parts.s2t[j], parts.t2s[j + 1])
        if folded:
            bridge.load_state_dict(fold(*pair).state_dict())
        else:
            bridge[0].load_state_dict(pair[0].state_dict())
            bridge[1].load_state_dict(pair[1].state_dict())
    return s.eval()
