"""Network grafting (NetGraft, Shen et al. AAAI 2021), the method itself, for any network cut into blocks.

The teacher is a BlockNet: blocks 0..L-1 with known channel widths at every boundary. The student
differs from the teacher from some block `first` on. Each of those student blocks j comes with two
adapters (a linear map across channels, a 1x1 conv on feature maps): `t2s[j]` maps teacher-width
activations to the student block's input width, `s2t[j]` maps its output back to teacher width.
Where widths agree an adapter is the identity.

Stage 1, block grafting: put (t2s[j], student block j, s2t[j]) in place of teacher block j, freeze
everything else, and train so the hybrid matches the teacher: its logits (the paper), and/or the
teacher's activations where the grafted part hands over (see loss_plan). The blocks do not depend on
each other, so one teacher pass per batch gives the target and every block's input, and all blocks
train side by side (`joint=True`), bit-for-bit the same as one after the other (`joint=False`).

Stage 2, progressive net grafting: chain student blocks first..first+k (the adapter pair between two
student blocks stays, trainable), graft the chain, fine-tune it, grow k until the chain reaches the
logits. The result, with each adapter pair folded into one map, is the standalone student.

Nothing here knows an architecture: families (nbgraft.models) build the blocks, and may start a
student block from its teacher block (`inherit`), which also gives the adapters' starting maps.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .device import accumulator, autocast
from .models import BlockNet
from .profiles import GraftSchedule
from .training import generator, progress


# --------------------------------------------------------------------------- adapters
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


# --------------------------------------------------------------------------- the grafted parts
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


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Squared error of the grafted part's output against the teacher's, relative to the teacher's energy."""
    err = (student_features - teacher_features).pow(2).flatten(1).sum(1)
    return (err / teacher_features.pow(2).flatten(1).sum(1).clamp_min(1e-12)).mean()


@dataclass(frozen=True)
class LossPlan:
    """What the loss of the hybrid Grafted(a, b) reads: the part's output features at teacher boundaries
    `points` (weight `feature_weight`, averaged over them) and the logits (weight `logit_weight`; 0 means
    the teacher's blocks after the part never run)."""

    points: tuple[int, ...]
    logit_weight: float
    feature_weight: float

    @property
    def logits(self) -> bool:
        return self.logit_weight > 0


def loss_plan(sched: GraftSchedule, a: int, b: int, n_blocks: int) -> LossPlan:
    """The schedule's loss for the part a..b: the paper's (logits alone), or with the feature loss at the
    part's exit (`feature_points` = "exit") or at every boundary it produces ("all"). A part ending in the
    logits, or with no feature point, always reads the logits."""
    points: tuple[int, ...] = ()
    if sched.feature_weight:
        span = [b + 1] if sched.feature_points == "exit" else range(a + 1, b + 2)
        points = tuple(p for p in span if p < n_blocks)
    w = sched.logit_weight if points else 1.0
    if not w and b + 1 >= n_blocks:
        w = 1.0
    return LossPlan(points, w, sched.feature_weight)


def run_hybrid(model: Grafted, h: torch.Tensor, plan: LossPlan):
    """(features at plan.points, logits or None) of the hybrid, from the teacher's activation entering block a."""
    feats, k = [], model.a
    for idx, m in enumerate(model.scion):
        h = m(h)
        if idx % 3 == 2:  # after s2t of a student block: the activation entering teacher block k + 1
            k += 1
            if k in plan.points:
                feats.append(h)
    logits = model.teacher.run(h, model.b + 1, len(model.teacher)) if plan.logits else None
    return tuple(feats), logits


def plan_loss(feats, logits, acts: dict, plan: LossPlan, logit_fn, feature_fn):
    """Combine the parts of a plan's loss: logit_fn(logits, target), feature_fn(features, target) per point."""
    loss = 0.0
    if plan.logits:
        loss = plan.logit_weight * logit_fn(logits.float(), acts["logits"])
    if plan.points:
        f = sum(feature_fn(x.float(), acts[p].float()) for x, p in zip(feats, plan.points)) / len(plan.points)
        loss = loss + plan.feature_weight * f
    return loss


def hybrid_loss(model: Grafted, h: torch.Tensor, acts: dict, sched: GraftSchedule) -> torch.Tensor:
    """The grafting loss of the hybrid from block a's input (see loss_plan)."""
    plan = loss_plan(sched, model.a, model.b, len(model.teacher))
    with autocast(h.device):
        feats, logits = run_hybrid(model, h, plan)
    return plan_loss(feats, logits, acts, plan, lambda o, t: graft_loss(o, t, sched.loss, sched.temperature),
                     feature_loss)


# --------------------------------------------------------------------------- training
@dataclass
class StageLog:
    """Per-epoch mean loss of every trained unit, and the wall time of the stage."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0


def augmented_views(x: torch.Tensor, views: int, seed: int) -> torch.Tensor:
    """`views` augmented copies of every image, drawn once by `seed`: view v of image i at index i * views + v."""
    gen = generator(seed * 1_000_003 + 999_983, x.device)
    return torch.stack([D.augment(x, gen) for _ in range(views)], dim=1).flatten(0, 1)


def pooled(sched) -> int:
    """Images per source image the teacher's activations are computed for once: 1 without augmentation,
    the pool size with a pool of views, 0 for fresh augmentations every step (always with mixup)."""
    if not sched.augment:
        return 1
    return 0 if sched.mixup else sched.views


def mix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blend, partner index, weight): each image blended with another of the batch, by a weight drawn
    uniformly from [0, 1] (mixup with alpha = 1). The teacher is asked about the blend too, so grafting
    needs no label: the few images give more inputs to match the teacher on."""
    perm = torch.randperm(len(x), generator=gen, device=gen.device).to(x.device)
    lam = torch.rand(len(x), generator=gen, device=gen.device).to(x.device)
    w = lam.view(-1, *([1] * (x.ndim - 1)))
    return w * x + (1 - w) * x[perm], perm, lam


def _epoch_batches(x: torch.Tensor, batch_size: int, seed: int, epoch: int, sched):
    """The same shuffled (and augmented) batches for a given (seed, epoch), whoever asks.

    Yields (index, images): with fresh augmentation the augmented images and their indices into x;
    otherwise indices into the image pool (x itself, or its views) and None."""
    gen = generator(seed * 1_000_003 + epoch, x.device)
    k = pooled(sched)
    for b in D.batches(len(x), batch_size, gen):
        b = b.to(x.device)
        if k == 0:
            xb = D.augment(x[b], gen)
            yield b, (mix(xb, gen)[0] if sched.mixup else xb)
        elif k == 1:
            yield b, None
        else:
            yield b * k + torch.randint(k, (len(b),), generator=gen, device=gen.device).to(x.device), None


class TeacherCache:
    """Teacher activations at the boundaries grafting reads (and its logits).

    Without augmentation, or with a pool of views, computed once over all images of the pool;
    with fresh augmentations, computed per batch. `pools` is [(images, seed)], one per student trained
    together; their pools are concatenated in that order."""

    CHUNK = 512

    def __init__(self, teacher: BlockNet, pools, boundaries, sched):
        self.teacher, self.k = teacher, pooled(sched)
        self.bounds = sorted({i for i in boundaries if i < len(teacher)})
        self.full = None
        if self.k:
            images = [x if self.k == 1 else augmented_views(x, self.k, seed) for x, seed in pools]
            parts = [self._compute(c) for x in images for c in x.split(self.CHUNK)]
            self.full = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def images_per_source(self) -> int:
        return max(1, self.k)

    @torch.no_grad()
    def _compute(self, xb: torch.Tensor) -> dict:
        out, h, prev = {}, xb, 0
        with autocast(xb.device):
            for s in self.bounds:
                h = self.teacher.run(h, prev, s)
                out[s], prev = h, s
            out["logits"] = self.teacher.run(h, prev, len(self.teacher)).float()
        return out

    def get(self, idx: torch.Tensor, xb: torch.Tensor | None) -> dict:
        return self._compute(xb) if self.full is None else {k: v[idx] for k, v in self.full.items()}


def stage_spans(parts, sched: GraftSchedule) -> list[tuple[int, int]]:
    """Every (a, b) both stages graft: each block alone, then each net step's chain."""
    return [(i, i) for i in parts.positions] + [(a, b) for a, b, _ in net_steps(parts, sched)]


def needed_boundaries(sched: GraftSchedule, spans, n_blocks: int = 10**9) -> list[int]:
    """Teacher boundaries a stage reads: each span's input, and the points of its feature loss."""
    return sorted({a for a, _ in spans} | {p for a, b in spans for p in loss_plan(sched, a, b, n_blocks).points})


def _adam(groups: list[dict]) -> torch.optim.Adam:
    return torch.optim.Adam([g for g in groups if g["params"]])


def block_optimizer(parts, j: int, sched: GraftSchedule, shots: int) -> torch.optim.Adam:
    """Adam for the j-th grafted block of `parts` (GraftParts or a stack of them) and its adapters,
    at the schedule's block and adapter learning rates, scaled with N where the schedule says so."""
    i = parts.positions[j]
    blocks, adapters = parts.chain_params(i, i)
    scale = sched.lr_scale(shots)
    return _adam([{"params": blocks, "lr": sched.block_lr_at(j) * scale},
                  {"params": adapters, "lr": sched.block_adapter_lr * scale}])


def net_optimizer(parts, a: int, b: int, sched: GraftSchedule, shots: int) -> torch.optim.Adam:
    """Adam for the chain a..b: blocks at `net_lr`, adapters at `net_adapter_lr` (scaled where asked)."""
    blocks, adapters = parts.chain_params(a, b)
    scale = sched.net_lr_scale(shots)
    return _adam([{"params": blocks, "lr": sched.net_lr * scale},
                  {"params": adapters, "lr": sched.net_adapter_lr * scale}])


def graft_blocks(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
                 seed: int = 0, joint: bool = True, cache: TeacherCache | None = None) -> StageLog:
    """Stage 1: train every student block (with its adapters) alone inside the frozen teacher.

    `joint=True` trains all blocks from one teacher pass per batch; `joint=False` is the plain
    one-block-at-a-time loop with a teacher pass per block and step. Both see identical batches.
    """
    teacher.eval()
    parts.train()
    log = StageLog()
    epochs = {i: sched.block_epochs_at(j, len(x)) for j, i in enumerate(parts.positions)}
    positions = [i for i in parts.positions if epochs[i] > 0]
    if not positions:
        return log
    opts = {i: block_optimizer(parts, j, sched, shots) for j, i in enumerate(parts.positions)}
    grafted = {i: Grafted(teacher, parts, i, i) for i in positions}
    bs = sched.batch_size(shots, teacher.num_classes)
    cache = cache or TeacherCache(teacher, [(x, seed)], needed_boundaries(sched, [(i, i) for i in positions],
                                                                          len(teacher)), sched)
    t0 = time.perf_counter()
    groups_to_run = [positions] if joint else [[i] for i in positions]
    for group in groups_to_run:
        n_epochs = max(epochs[i] for i in group)
        for epoch in progress(range(n_epochs), desc=f"block stage {'+'.join(str(i + 1) for i in group)}"):
            active = [i for i in group if epoch < epochs[i]]
            sums = {i: accumulator(x.device) for i in active}  # read once per epoch: no host sync per step
            for b, xb in _epoch_batches(x, bs, seed, epoch, sched):
                acts = cache.get(b, xb)
                total = 0.0
                for i in active:
                    loss = hybrid_loss(grafted[i], acts[i], acts, sched)
                    sums[i] += loss.detach().to(sums[i].dtype) * len(b)
                    total = total + loss
                for i in active:
                    opts[i].zero_grad(set_to_none=True)
                total.backward()
                for i in active:
                    opts[i].step()
            for i in active:
                log.losses.setdefault(f"block{i + 1}", []).append(sums[i].item() / len(x))
    log.wall_s = time.perf_counter() - t0
    return log


def net_steps(parts, sched: GraftSchedule) -> list[tuple[int, int, int]]:
    """(a, b, epochs) of each net-stage step: the chain grows from two blocks to all of them."""
    first, last = parts.first, parts.positions[-1]
    if sched.net_mode == "all_at_once":
        return [(first, last, sum(sched.net_epochs))]
    if sched.net_mode != "progressive":
        raise ValueError(f"unknown net_mode {sched.net_mode!r}; use 'progressive' or 'all_at_once'")
    ends = range(first + 1, last + 1) if last > first else [last]
    return [(first, b, sched.net_epochs[min(k, len(sched.net_epochs) - 1)]) for k, b in enumerate(ends)]


def graft_net(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
              seed: int = 0, on_step=None, cache: TeacherCache | None = None) -> StageLog:
    """Stage 2: graft the growing student chain and fine-tune it (blocks and inner adapters together).

    `on_step(a, b)` is called after each growth step (e.g. to evaluate the grafted network).
    """
    teacher.eval()
    parts.train()
    log = StageLog()
    bs = sched.batch_size(shots, teacher.num_classes)
    steps = net_steps(parts, sched)
    cache = cache or TeacherCache(teacher, [(x, seed)], needed_boundaries(sched, [(a, b) for a, b, _ in steps],
                                                                          len(teacher)), sched)
    t0 = time.perf_counter()
    for a, b, n_epochs in steps:
        opt = net_optimizer(parts, a, b, sched, shots)
        model = Grafted(teacher, parts, a, b)
        name = f"chain{a + 1}-{b + 1}"
        for epoch in progress(range(n_epochs), desc=f"net stage {name}"):
            total = accumulator(x.device)
            for bi, xb in _epoch_batches(x, bs, seed + 7919 * (b + 1), epoch, sched):
                acts = cache.get(bi, xb)
                loss = hybrid_loss(model, acts[a], acts, sched)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().to(total.dtype) * len(bi)
            log.losses.setdefault(name, []).append(total.item() / len(x))
        if on_step is not None:
            on_step(a, b)
    log.wall_s = time.perf_counter() - t0
    return log


# --------------------------------------------------------------------------- the standalone student
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


def netgraft(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
             seed: int = 0) -> tuple[BlockNet, StageLog, StageLog]:
    """Both stages on few-shot images x (in the teacher's input space), then the folded student:
    (student, block-stage log, net-stage log). One teacher cache serves both stages."""
    cache = TeacherCache(teacher, [(x, seed)], needed_boundaries(sched, stage_spans(parts, sched), len(teacher)), sched)
    block_log = graft_blocks(teacher, parts, x, sched, shots, seed, cache=cache)
    net_log = graft_net(teacher, parts, x, sched, shots, seed, cache=cache)
    return export_student(teacher, parts), block_log, net_log
