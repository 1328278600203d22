"""Several seeds of NetGraft in one training loop, each with its own few-shot draw, exactly as if run alone.

Why: a seed sweep at N = 10 is S runs of a 100-image problem. Here every step makes one teacher pass
over all seeds' batches (or none, when the teacher's activations of a pool of views are computed once),
and the test and validation sets (the same for every seed) go through the teacher once: each later
score runs only the student's part from the saved boundary activations.

The S students themselves run either
- `loop`: one after another inside each step, as plain modules. Bit-for-bit the single runs; on a CPU,
  where their convolutions are compute-bound, as fast as `vmap` (measured) and so the default there.
- `vmap`: stacked along a leading seed axis (`torch.func.stack_module_state`) and run with
  `vmap(functional_call(...))`, so each layer is one batched op for all seeds; the default on a GPU,
  where many tiny kernels are the cost. BatchNorm running statistics are stacked buffers updated in
  place per seed; one Adam over stacked tensors is S independent Adams (Adam is elementwise). Equal to
  the single runs up to float rounding (grouped instead of plain convolutions).

nbgraft.experiments caches each seed's result where a single run of that seed would be stored.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .device import accumulator, autocast, no_autocast, policy
from .evaluate import eval_batch
from .graft import (GraftParts, Grafted, LossPlan, StageLog, TeacherCache, _epoch_batches, block_optimizer,
                    feature_loss, graft_loss, loss_plan, needed_boundaries, net_optimizer, net_steps, plan_loss,
                    pooled, run_hybrid, stage_spans)
from .models import BlockNet
from .profiles import GraftSchedule
from .training import progress


class _FromBoundary(Grafted):
    """Grafted, called on the teacher's activation entering block a (what functional_call invokes)."""

    def __init__(self, *args, plan: LossPlan | None = None):
        super().__init__(*args)
        self.plan = plan

    def forward(self, h: torch.Tensor):
        if self.plan is None:
            return self.from_boundary(h)
        feats, logits = run_hybrid(self, h, self.plan)
        return (feats, logits) if self.plan.logits else (feats,)  # vmap returns tensors, not None


class StackedParts:
    """S GraftParts of one architecture with parameters and buffers stacked on a leading seed axis."""

    def __init__(self, parts: list[GraftParts]):
        if not parts:
            raise ValueError("need at least one GraftParts to stack")
        self.originals = parts
        self.template = copy.deepcopy(parts[0]).to("meta")
        params, buffers = stack_module_state(parts)
        self.params = {k: nn.Parameter(v.detach().clone()) for k, v in params.items()}
        self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        self.first, self.positions = parts[0].first, parts[0].positions

    def __len__(self) -> int:
        return len(self.originals)

    def chain_params(self, a: int, b: int) -> tuple[list, list]:
        """(block parameters, adapter parameters) of the chain a..b, stacked (as GraftParts.chain_params)."""
        js = range(a - self.first, b - self.first + 1)
        blocks = [f"blocks.{j}.{n}" for j in js for n, _ in self.template.blocks[j].named_parameters()]
        adapters = [f"{kind}.{j}.{n}" for j in js for kind in ("t2s", "s2t")
                    for n, _ in getattr(self.template, kind)[j].named_parameters()]
        return [self.params[k] for k in blocks], [self.params[k] for k in adapters]

    def hybrid(self, teacher: BlockNet, a: int, b: int, train: bool, shared_input: bool = False,
               plan: LossPlan | None = None):
        """f(h) -> every seed's Grafted(a, b) logits from boundary activations h, or with a plan what
        run_hybrid gives. h is (S, B, ...) with one batch per seed, or (B, ...) shared by all seeds
        if `shared_input`."""
        module = _FromBoundary(teacher, self.template, a, b, plan=plan)
        state = {f"parts.{k}": v for k, v in {**self.params, **self.buffers}.items()}

        def one(state_s, h):
            return functional_call(module, state_s, (h,))

        def run(h: torch.Tensor):
            module.train(train)  # the template is shared by every hybrid: set its mode at each call
            with no_autocast(h.device):  # autocast does not reach inside vmap: the stack computes in fp32
                out = vmap(one, in_dims=(0, None if shared_input else 0))(state, h.float())
            return out if plan is None or plan.logits else (out[0], None)

        return run

    @staticmethod
    def losses(out: torch.Tensor, target: torch.Tensor, sched: GraftSchedule) -> torch.Tensor:
        """(S,) grafting loss of each seed."""
        return vmap(partial(graft_loss, kind=sched.loss, temperature=sched.temperature))(out, target)

    @staticmethod
    def feature_losses(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return vmap(feature_loss)(f, target)

    def unstack(self) -> list[GraftParts]:
        """Each seed's GraftParts as a plain module holding its current weights and statistics."""
        out = []
        for s, orig in enumerate(self.originals):
            p = copy.deepcopy(orig)
            p.load_state_dict({k: v[s].detach().clone() for k, v in {**self.params, **self.buffers}.items()})
            out.append(p)
        return out


class LoopedParts:
    """S GraftParts run one after another within each step: the same interface as StackedParts."""

    def __init__(self, parts: list[GraftParts]):
        if not parts:
            raise ValueError("need at least one GraftParts")
        self.parts = parts
        self.first, self.positions = parts[0].first, parts[0].positions

    def __len__(self) -> int:
        return len(self.parts)

    def chain_params(self, a: int, b: int) -> tuple[list, list]:
        per_seed = [p.chain_params(a, b) for p in self.parts]
        return [t for bl, _ in per_seed for t in bl], [t for _, ad in per_seed for t in ad]

    def hybrid(self, teacher: BlockNet, a: int, b: int, train: bool, shared_input: bool = False,
               plan: LossPlan | None = None):
        grafted = [Grafted(teacher, p, a, b) for p in self.parts]

        def run(h: torch.Tensor):
            inputs = [h if shared_input else h[k] for k in range(len(grafted))]
            if plan is None:
                return torch.stack([g.train(train).from_boundary(x) for g, x in zip(grafted, inputs)])
            outs = [run_hybrid(g.train(train), x, plan) for g, x in zip(grafted, inputs)]
            feats = tuple(torch.stack([o[0][p] for o in outs]) for p in range(len(plan.points)))
            return feats, (torch.stack([o[1] for o in outs]) if plan.logits else None)

        return run

    @staticmethod
    def losses(out: torch.Tensor, target: torch.Tensor, sched: GraftSchedule) -> torch.Tensor:
        return torch.stack([graft_loss(o, t, sched.loss, sched.temperature) for o, t in zip(out, target)])

    @staticmethod
    def feature_losses(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([feature_loss(a, b) for a, b in zip(f, target)])

    def unstack(self) -> list[GraftParts]:
        return self.parts


STACKS = {"loop": LoopedParts, "vmap": StackedParts}


def stack_name(device: torch.device, stack: str = "auto") -> str:
    """`auto`: the device's policy (nbgraft.device): loop on a CPU (compute-bound convolutions), vmap on an
    accelerator (launch-bound)."""
    if stack == "auto":
        stack = policy(device).stack
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; use 'auto', 'loop' or 'vmap'")
    return stack


def stack_for(device: torch.device, stack: str = "auto") -> type:
    return STACKS[stack_name(device, stack)]


# --------------------------------------------------------------------------- training
def _seed_batches(xs: torch.Tensor, bs: int, seeds: list[int], epoch: int, sched: GraftSchedule, per_source: int):
    """Each seed's own batches (as a single run draws them), zipped: (batch size, global indices, images)."""
    n = xs.shape[1] * per_source  # pool entries per seed
    for per_seed in zip(*(_epoch_batches(xs[k], bs, s, epoch, sched) for k, s in enumerate(seeds))):
        idx = torch.cat([b + k * n for k, (b, _) in enumerate(per_seed)])
        images = None if per_seed[0][1] is None else torch.cat([xb for _, xb in per_seed])
        yield len(per_seed[0][0]), idx, images


def seed_cache(teacher: BlockNet, stacked, xs: torch.Tensor, sched: GraftSchedule, seeds: list[int]) -> TeacherCache:
    """One TeacherCache for both stages of every seed: each seed's own pool of views, in seed order."""
    bounds = needed_boundaries(sched, stage_spans(stacked, sched), len(teacher))
    return TeacherCache(teacher, list(zip(xs, seeds)), bounds, sched)


def _stacked_loss(stacked, hybrid, a: int, acts: dict, sched: GraftSchedule, plan: LossPlan):
    """(S,) loss of each seed's hybrid, as graft.hybrid_loss computes it for one."""
    with autocast(acts[a].device):
        feats, logits = hybrid(acts[a])
    return plan_loss(feats, logits, acts, plan, lambda o, t: stacked.losses(o, t, sched), stacked.feature_losses)


def graft_blocks_stacked(teacher: BlockNet, stacked: StackedParts | LoopedParts, xs: torch.Tensor,
                         sched: GraftSchedule, shots: int, seeds: list[int],
                         cache: TeacherCache | None = None, on_epoch=None) -> list[StageLog]:
    """Stage 1 of graft_blocks (joint) for every seed at once; xs is (S, n, ...). One log per seed.
    `on_epoch(stacked, epochs done)` runs every `sched.val_every` epochs (and before the first)."""
    teacher.eval()
    S, n = xs.shape[:2]
    L = len(teacher)
    logs = [StageLog() for _ in range(S)]
    epochs = {i: sched.block_epochs_at(j, n) for j, i in enumerate(stacked.positions)}
    positions = [i for i in stacked.positions if epochs[i] > 0]
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
    for epoch in progress(range(max(epochs.values())), desc=f"block stage, {S} seeds"):
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
    """Stage 2 of graft_net for every seed at once. `on_step(a, b)` runs after each growth step."""
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
        step_seeds = [s + 7919 * (b + 1) for s in seeds]  # as graft_net
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


# --------------------------------------------------------------------------- scoring on shared boundaries
class SharedBoundaries:
    """The teacher's activations of one fixed image set (val or test) entering blocks first..L-1.

    Computed once; every later score of a grafted network or student runs only from there on.
    """

    def __init__(self, teacher: BlockNet, x: torch.Tensor, first: int):
        L = len(teacher)
        self.first, self.acts = first, {i: [] for i in range(first, L)}
        self.chunk = bs = eval_batch(x.device)
        with torch.no_grad(), autocast(x.device):
            for c in range(0, len(x), bs):
                h = teacher.run(x[c: c + bs], 0, first)
                for i in range(first, L):
                    self.acts[i].append(h)
                    h = teacher.blocks[i](h)
        self.acts = {i: torch.cat(v) for i, v in self.acts.items()}

    @torch.no_grad()
    def hybrid_logits(self, stacked: StackedParts | LoopedParts, teacher: BlockNet, a: int, b: int) -> torch.Tensor:
        """(S, N, classes) logits of each seed's Grafted(a, b), in eval mode."""
        f = stacked.hybrid(teacher, a, b, train=False, shared_input=True)
        h, bs = self.acts[a], self.chunk
        with autocast(h.device):
            return torch.cat([f(h[c: c + bs]).float() for c in range(0, len(h), bs)], dim=1)

    @torch.no_grad()
    def student_logits(self, student: BlockNet) -> torch.Tensor:
        """(N, classes) logits of an exported student, whose blocks before `first` are the teacher's."""
        student.eval()
        h, bs = self.acts[self.first], self.chunk
        with autocast(h.device):
            return torch.cat([student.run(h[c: c + bs], self.first, len(student)).float()
                              for c in range(0, len(h), bs)])


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


__all__ = ["LoopedParts", "SharedBoundaries", "StackedParts", "graft_blocks_stacked", "graft_net_stacked",
           "pooled", "stack_for", "stack_name", "train_seeds"]
