"""The two stages of NetGraft (Shen et al., AAAI 2021), written once, for one student or several seeds' at once.

Stage 1, block grafting: put (t2s[j], student block j, s2t[j]) in place of teacher block j, freeze
everything else, and train so the hybrid matches the teacher: its logits (the paper), and/or the
teacher's activations where the grafted part hands over (see nbgraft.grafting.losses.loss_plan). The blocks
do not depend on each other, so one teacher pass per batch gives the target and every block's input, and
all blocks train side by side, bit-for-bit the same as one after the other (`joint=False`).

Stage 2, progressive net grafting: chain student blocks first..first+k (the adapter pair between two
student blocks stays, trainable), graft the chain, fine-tune it, grow k until the chain reaches the
logits. The result, with each adapter pair folded into one map, is the standalone student.

`graft_blocks_stacked` / `graft_net_stacked` train S seeds' students in each step (nbgraft.grafting.stacks);
`graft_blocks`, `graft_net` and `netgraft` are the same stages with one student.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..device import accumulator, autocast
from ..models import BlockNet
from ..schedules import GraftSchedule
from ..training import NET_STEP_STRIDE, derive_seed, progress
from .losses import LossPlan, loss_plan, plan_loss
from .parts import GraftParts, export_student, start_parts
from .stacks import LoopedParts, StackedParts, stack_for
from .views import TeacherCache, epoch_batches


@dataclass
class StageLog:
    """Per-epoch mean loss of every trained unit, and the wall time of the stage."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0


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


def net_steps(parts, sched: GraftSchedule) -> list[tuple[int, int, int]]:
    """(a, b, epochs) of each net-stage step: the chain grows from two blocks to all of them."""
    first, last = parts.first, parts.positions[-1]
    if sched.net_mode == "all_at_once":
        return [(first, last, sum(sched.net_epochs))]
    if sched.net_mode != "progressive":
        raise ValueError(f"unknown net_mode {sched.net_mode!r}; use 'progressive' or 'all_at_once'")
    ends = range(first + 1, last + 1) if last > first else [last]
    return [(first, b, sched.net_epochs[min(k, len(sched.net_epochs) - 1)]) for k, b in enumerate(ends)]


def _seed_batches(xs: torch.Tensor, bs: int, seeds: list[int], epoch: int, sched: GraftSchedule, per_source: int):
    """Each seed's own batches (as a single run draws them), zipped: (batch size, global indices, images)."""
    n = xs.shape[1] * per_source  # pool entries per seed
    for per_seed in zip(*(epoch_batches(xs[k], bs, s, epoch, sched) for k, s in enumerate(seeds))):
        idx = torch.cat([b + k * n for k, (b, _) in enumerate(per_seed)])
        images = None if per_seed[0][1] is None else torch.cat([xb for _, xb in per_seed])
        yield len(per_seed[0][0]), idx, images


def seed_cache(teacher: BlockNet, stacked, xs: torch.Tensor, sched: GraftSchedule, seeds: list[int]) -> TeacherCache:
    """One TeacherCache for both stages of every seed: each seed's own pool of views, in seed order."""
    bounds = needed_boundaries(sched, stage_spans(stacked, sched), len(teacher))
    return TeacherCache(teacher, list(zip(xs, seeds)), bounds, sched)


def _stacked_loss(stacked, hybrid, a: int, acts: dict, sched: GraftSchedule, plan: LossPlan):
    """(S,) grafting loss of each seed's hybrid from block a's input (see loss_plan)."""
    with autocast(acts[a].device):
        feats, logits = hybrid(acts[a])
    return plan_loss(feats, logits, acts, plan, lambda o, t: stacked.losses(o, t, sched), stacked.feature_losses)


def graft_blocks_stacked(teacher: BlockNet, stacked: StackedParts | LoopedParts, xs: torch.Tensor,
                         sched: GraftSchedule, shots: int, seeds: list[int],
                         cache: TeacherCache | None = None, on_epoch=None, only: list[int] | None = None
                         ) -> list[StageLog]:
    """Stage 1 for every seed at once; xs is (S, n, ...). One log per seed. All blocks train side by side
    (`only`: just those teacher positions). `on_epoch(stacked, epochs done)` runs every `sched.val_every`
    epochs (and before the first)."""
    teacher.eval()
    S, n = xs.shape[:2]
    L = len(teacher)
    logs = [StageLog() for _ in range(S)]
    epochs = {i: sched.block_epochs_at(j, n) for j, i in enumerate(stacked.positions)}
    positions = [i for i in stacked.positions if epochs[i] > 0 and (only is None or i in only)]
    if not positions:
        return logs
    opts = {i: block_optimizer(stacked, j, sched, shots) for j, i in enumerate(stacked.positions)}
    plans = {i: loss_plan(sched, i, i, L) for i in positions}
    hybrids = {i: stacked.hybrid(teacher, i, i, train=True, plan=plans[i]) for i in positions}
    bs = sched.batch_size(shots, teacher.num_classes)
    cache = cache or seed_cache(teacher, stacked, xs, sched, seeds)
    t0 = time.perf_counter()
    watch = on_epoch is not None and sched.val_every > 0
    if watch:
        on_epoch(stacked, 0)
    for epoch in progress(range(max(epochs[i] for i in positions)), desc=f"block stage, {S} seeds"):
        active = [i for i in positions if epoch < epochs[i]]
        sums = {i: accumulator(xs.device, S) for i in active}
        for size, idx, xb in _seed_batches(xs, bs, seeds, epoch, sched, cache.images_per_source()):
            acts = {k: v.unflatten(0, (S, size)) for k, v in cache.get(idx, xb).items()}
            total = 0.0
            for i in active:
                losses = _stacked_loss(stacked, hybrids[i], i, acts, sched, plans[i])
                sums[i] += losses.detach().to(sums[i].dtype) * size
                total = total + losses.sum()
            for i in active:
                opts[i].zero_grad(set_to_none=True)
            total.backward()
            for i in active:
                opts[i].step()
        for i in active:  # read once per epoch
            for k, total_k in enumerate(sums[i].tolist()):
                logs[k].losses.setdefault(f"block{i + 1}", []).append(total_k / n)
        if watch and (epoch + 1) % sched.val_every == 0:
            on_epoch(stacked, epoch + 1)
    wall = time.perf_counter() - t0
    for log in logs:
        log.wall_s = wall
    return logs


def graft_net_stacked(teacher: BlockNet, stacked: StackedParts | LoopedParts, xs: torch.Tensor,
                      sched: GraftSchedule, shots: int, seeds: list[int], on_step=None,
                      cache: TeacherCache | None = None) -> list[StageLog]:
    """Stage 2 for every seed at once: graft the growing student chain and fine-tune it (blocks and inner
    adapters together). `on_step(a, b)` runs after each growth step."""
    teacher.eval()
    S, n = xs.shape[:2]
    L = len(teacher)
    logs = [StageLog() for _ in range(S)]
    bs = sched.batch_size(shots, teacher.num_classes)
    cache = cache or seed_cache(teacher, stacked, xs, sched, seeds)
    t0 = time.perf_counter()
    for a, b, n_epochs in net_steps(stacked, sched):
        opt = net_optimizer(stacked, a, b, sched, shots)
        plan = loss_plan(sched, a, b, L)
        hybrid = stacked.hybrid(teacher, a, b, train=True, plan=plan)
        name = f"chain{a + 1}-{b + 1}"
        step_seeds = [derive_seed(b + 1, s, NET_STEP_STRIDE) for s in seeds]
        for epoch in progress(range(n_epochs), desc=f"net stage {name}, {S} seeds"):
            total = accumulator(xs.device, S)
            for size, idx, xb in _seed_batches(xs, bs, step_seeds, epoch, sched, cache.images_per_source()):
                acts = {k: v.unflatten(0, (S, size)) for k, v in cache.get(idx, xb).items()}
                losses = _stacked_loss(stacked, hybrid, a, acts, sched, plan)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                total += losses.detach().to(total.dtype) * size
            for k, total_k in enumerate(total.tolist()):  # read once per epoch
                logs[k].losses.setdefault(name, []).append(total_k / n)
        if on_step is not None:
            on_step(a, b)
    wall = time.perf_counter() - t0
    for log in logs:
        log.wall_s = wall
    return logs


def train_seeds(teacher: BlockNet, parts: list[GraftParts], xs: torch.Tensor, sched: GraftSchedule, shots: int,
                seeds: list[int], stack: str = "auto", on_step=None, on_epoch=None) -> tuple[list[GraftParts], list, list]:
    """Both stages for every seed's GraftParts; returns (trained parts, block logs, net logs).
    on_step(stacked, a, b) after the block stage (a = b = None) and each net step; on_epoch as in
    graft_blocks_stacked."""
    stacked = stack_for(xs.device, stack)(parts)
    cache = seed_cache(teacher, stacked, xs, sched, seeds)
    block_logs = graft_blocks_stacked(teacher, stacked, xs, sched, shots, seeds, cache, on_epoch=on_epoch)
    if on_step is not None:
        on_step(stacked, None, None)
    net_logs = graft_net_stacked(teacher, stacked, xs, sched, shots, seeds, cache=cache,
                                 on_step=None if on_step is None else (lambda a, b: on_step(stacked, a, b)))
    return stacked.unstack(), block_logs, net_logs


def graft_blocks(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
                 seed: int = 0, joint: bool = True, cache: TeacherCache | None = None) -> StageLog:
    """Stage 1 for one student: train every student block (with its adapters) alone inside the frozen teacher.

    `joint=True` trains all blocks from one teacher pass per batch; `joint=False` trains one block after
    another (a teacher pass per block and step). Both see identical batches and give identical blocks."""
    one, xs = LoopedParts([parts]), x[None]
    if joint:
        return graft_blocks_stacked(teacher, one, xs, sched, shots, [seed], cache)[0]
    cache = cache or seed_cache(teacher, one, xs, sched, [seed])
    log, t0 = StageLog(), time.perf_counter()
    for i in parts.positions:
        log.losses.update(graft_blocks_stacked(teacher, one, xs, sched, shots, [seed], cache, only=[i])[0].losses)
    log.wall_s = time.perf_counter() - t0
    return log


def graft_net(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
              seed: int = 0, on_step=None, cache: TeacherCache | None = None) -> StageLog:
    """Stage 2 for one student (see graft_net_stacked). `on_step(a, b)` runs after each growth step (e.g. to
    evaluate the grafted network)."""
    return graft_net_stacked(teacher, LoopedParts([parts]), x[None], sched, shots, [seed], on_step, cache)[0]


def netgraft(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
             seed: int = 0, inherit_block=None, groups=None) -> tuple[BlockNet, StageLog, StageLog]:
    """Both stages on few-shot images x (in the teacher's input space), then the folded student:
    (student, block-stage log, net-stage log). One teacher cache serves both stages.

    Every field of `sched` is honoured or refused: `init` "teacher"/"teacher_fit" first starts `parts` from the
    teacher (nbgraft.models.inherit: the teacher family's `inherit_block`, or yours with `groups` for a network
    of your own); `val_every` > 0 asks for validation curves, which need the labelled pool of the runs layer
    (nbgraft.runs.experiments.graft_seeds) and are refused here."""
    if sched.val_every:
        raise ValueError(f"netgraft has no validation set, so it cannot record curves every {sched.val_every} epochs: "
                         "pass a schedule with val_every=0 (graft_seeds records them on the validation pool)")
    start_parts(teacher, parts, sched.init, x, inherit_block, groups)
    _, (block_log,), (net_log,) = train_seeds(teacher, [parts], x[None], sched, shots, [seed], stack="loop")
    return export_student(teacher, parts), block_log, net_log
