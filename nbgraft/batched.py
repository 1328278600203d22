"""Several seeds of NetGraft in one training loop, each with its own few-shot draw, exactly as if run alone.

Why: a seed sweep at N = 10 is S runs of a 100-image problem. Here every step makes one teacher pass
over all seeds' batches, and the test and validation sets (the same for every seed) go through the
teacher once: each later score runs only the student's part from the saved boundary activations.
On a CPU, evaluation is a large share of a single run, so that is where batching pays there.

The S students themselves run either
- `loop`: one after another inside each step, as plain modules. Bit-for-bit the single runs; on a CPU,
  where their convolutions are compute-bound, as fast as `vmap` (measured) and so the default there.
- `vmap`: stacked along a leading seed axis (`torch.func.stack_module_state`) and run with
  `vmap(functional_call(...))`, so each layer is one batched op for all seeds; the default on a GPU,
  where many tiny kernels are the cost. BatchNorm running statistics are stacked buffers updated in
  place per seed; one Adam over stacked tensors is S independent Adams (Adam is elementwise). Equal to
  the single runs up to float rounding (grouped instead of plain convolutions).

`graft_seeds` stores each seed's result in the very cache entry `run_netgraft` uses, so a sweep that
calls `run_netgraft` afterwards just reads them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import data as D
from .cache import Entry
from .device import autocast
from .evaluate import count_flops, count_params
from .experiments import Setting, _base_config, prepare
from .graft import (GraftParts, Grafted, StageLog, Student, _epoch_batches, _TeacherCache, block_optimizer,
                    export_student,
                    graft_loss, net_steps)
from .models import NUM_BLOCKS, BlockVGG, student_spec
from .profiles import GraftSchedule, get_profile
from .teacher import spec_from_config, teacher_config
from .training import progress

EVAL_BATCH = 1000  # images per scoring chunk (as nbgraft.evaluate.predict)


class _FromBoundary(Grafted):
    """Grafted, called on the teacher's activation entering block a (what functional_call invokes)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.from_boundary(h)


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

    def hybrid(self, teacher: BlockVGG, a: int, b: int, train: bool, shared_input: bool = False):
        """f(h) -> logits of every seed's Grafted(a, b) from boundary activations h.

        h is (S, B, ...) with one batch per seed, or (B, ...) shared by all seeds if `shared_input`.
        """
        module = _FromBoundary(teacher, self.template, a, b)
        state = {f"parts.{k}": v for k, v in {**self.params, **self.buffers}.items()}

        def one(state_s, h):
            return functional_call(module, state_s, (h,))

        def run(h: torch.Tensor) -> torch.Tensor:
            module.train(train)  # the template is shared by every hybrid: set its mode at each call
            return vmap(one, in_dims=(0, None if shared_input else 0))(state, h)

        return run

    @staticmethod
    def losses(out: torch.Tensor, target: torch.Tensor, sched: GraftSchedule) -> torch.Tensor:
        """(S,) grafting loss of each seed."""
        return vmap(partial(graft_loss, kind=sched.loss, temperature=sched.temperature))(out, target)

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

    def hybrid(self, teacher: BlockVGG, a: int, b: int, train: bool, shared_input: bool = False):
        grafted = [Grafted(teacher, p, a, b) for p in self.parts]

        def run(h: torch.Tensor) -> torch.Tensor:
            return torch.stack([g.train(train).from_boundary(h if shared_input else h[k])
                                for k, g in enumerate(grafted)])

        return run

    @staticmethod
    def losses(out: torch.Tensor, target: torch.Tensor, sched: GraftSchedule) -> torch.Tensor:
        return torch.stack([graft_loss(o, t, sched.loss, sched.temperature) for o, t in zip(out, target)])

    def unstack(self) -> list[GraftParts]:
        return self.parts


STACKS = {"loop": LoopedParts, "vmap": StackedParts}


def stack_for(device: torch.device, stack: str = "auto") -> type:
    """`auto`: loop on a CPU (compute-bound convolutions), vmap on an accelerator (launch-bound)."""
    if stack == "auto":
        stack = "loop" if device.type == "cpu" else "vmap"
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; use 'auto', 'loop' or 'vmap'")
    return STACKS[stack]


# --------------------------------------------------------------------------- training
def _adam(groups: list[dict]) -> torch.optim.Adam:
    return torch.optim.Adam([g for g in groups if g["params"]])


def _seed_batches(xs: torch.Tensor, bs: int, seeds: list[int], epoch: int, augment: bool):
    """Each seed's own batches (as a single run draws them), zipped: (global indices, images) per step."""
    n = xs.shape[1]
    for per_seed in zip(*(_epoch_batches(xs[k], bs, s, epoch, augment) for k, s in enumerate(seeds))):
        idx = torch.cat([b + k * n for k, (b, _) in enumerate(per_seed)])
        yield len(per_seed[0][0]), idx, torch.cat([xb for _, xb in per_seed])


def graft_blocks_stacked(teacher: BlockVGG, stacked: StackedParts | LoopedParts, xs: torch.Tensor, sched: GraftSchedule,
                         shots: int, seeds: list[int]) -> list[StageLog]:
    """Stage 1 of graft_blocks (joint) for every seed at once; xs is (S, n, 3, H, W). One log per seed."""
    teacher.eval()
    S, n = xs.shape[:2]
    logs = [StageLog() for _ in range(S)]
    epochs = {i: sched.block_epochs_at(j) for j, i in enumerate(stacked.positions)}
    positions = [i for i in stacked.positions if epochs[i] > 0]
    if not positions:
        return logs
    opts = {i: block_optimizer(stacked, j, sched, shots) for j, i in enumerate(stacked.positions)}
    hybrids = {i: stacked.hybrid(teacher, i, i, train=True) for i in positions}
    bs = sched.batch_size(shots, teacher.spec.num_classes)
    cache = _TeacherCache(teacher, xs.flatten(0, 1), positions, sched.augment)
    t0 = time.perf_counter()
    for epoch in progress(range(max(epochs.values())), desc=f"block stage, {S} seeds"):
        active = [i for i in positions if epoch < epochs[i]]
        sums = {i: torch.zeros(S, dtype=torch.float64) for i in active}
        for size, idx, xb in _seed_batches(xs, bs, seeds, epoch, sched.augment):
            acts = {k: v.unflatten(0, (S, size)) for k, v in cache.get(idx, xb).items()}
            total = 0.0
            for i in active:
                with autocast(xs.device):
                    out = hybrids[i](acts[i]).float()
                losses = stacked.losses(out, acts["logits"], sched)
                sums[i] += losses.detach().double().cpu() * size
                total = total + losses.sum()
            for i in active:
                opts[i].zero_grad(set_to_none=True)
            total.backward()
            for i in active:
                opts[i].step()
        for i in active:
            for k in range(S):
                logs[k].losses.setdefault(f"block{i + 1}", []).append(sums[i][k].item() / n)
    wall = time.perf_counter() - t0
    for log in logs:
        log.wall_s = wall
    return logs


def graft_net_stacked(teacher: BlockVGG, stacked: StackedParts | LoopedParts, xs: torch.Tensor, sched: GraftSchedule,
                      shots: int, seeds: list[int], on_step=None) -> list[StageLog]:
    """Stage 2 of graft_net for every seed at once. `on_step(a, b)` runs after each growth step."""
    teacher.eval()
    S, n = xs.shape[:2]
    logs = [StageLog() for _ in range(S)]
    scale = sched.lr_scale(shots)
    bs = sched.batch_size(shots, teacher.spec.num_classes)
    cache = _TeacherCache(teacher, xs.flatten(0, 1), [stacked.first], sched.augment)
    t0 = time.perf_counter()
    for a, b, n_epochs in net_steps(stacked, sched):
        blocks, adapters = stacked.chain_params(a, b)
        opt = _adam([{"params": blocks, "lr": sched.net_lr * scale},
                     {"params": adapters, "lr": sched.net_adapter_lr * scale}])
        hybrid = stacked.hybrid(teacher, a, b, train=True)
        name = f"chain{a + 1}-{b + 1}"
        step_seeds = [s + 7919 * (b + 1) for s in seeds]  # as graft_net
        for epoch in progress(range(n_epochs), desc=f"net stage {name}, {S} seeds"):
            total = torch.zeros(S, dtype=torch.float64)
            for size, idx, xb in _seed_batches(xs, bs, step_seeds, epoch, sched.augment):
                acts = {k: v.unflatten(0, (S, size)) for k, v in cache.get(idx, xb).items()}
                with autocast(xs.device):
                    out = hybrid(acts[a]).float()
                losses = stacked.losses(out, acts["logits"], sched)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                total += losses.detach().double().cpu() * size
            for k in range(S):
                logs[k].losses.setdefault(name, []).append(total[k].item() / n)
        if on_step is not None:
            on_step(a, b)
    wall = time.perf_counter() - t0
    for log in logs:
        log.wall_s = wall
    return logs


# --------------------------------------------------------------------------- scoring on shared boundaries
class SharedBoundaries:
    """The teacher's activations of one fixed image set (val or test) entering blocks first..5.

    Computed once; every later score of a grafted network or student runs only from there on.
    """

    def __init__(self, teacher: BlockVGG, x: torch.Tensor, first: int):
        self.first, self.acts = first, {i: [] for i in range(first, NUM_BLOCKS)}
        with torch.no_grad(), autocast(x.device):
            for c in range(0, len(x), EVAL_BATCH):
                h = teacher.run(x[c : c + EVAL_BATCH], 0, first)
                for i in range(first, NUM_BLOCKS):
                    self.acts[i].append(h)
                    h = teacher.blocks[i](h)
        self.acts = {i: torch.cat(v) for i, v in self.acts.items()}

    @torch.no_grad()
    def hybrid_logits(self, stacked: StackedParts | LoopedParts, teacher: BlockVGG, a: int, b: int) -> torch.Tensor:
        """(S, N, classes) logits of each seed's Grafted(a, b), in eval mode."""
        f = stacked.hybrid(teacher, a, b, train=False, shared_input=True)
        h = self.acts[a]
        with autocast(h.device):
            return torch.cat([f(h[c : c + EVAL_BATCH]).float() for c in range(0, len(h), EVAL_BATCH)], dim=1)

    @torch.no_grad()
    def student_logits(self, student: Student) -> torch.Tensor:
        """(N, classes) logits of an exported student, whose blocks before `first` are the teacher's."""
        student.eval()
        out = []
        with autocast(self.acts[self.first].device):
            for c in range(0, len(self.acts[self.first]), EVAL_BATCH):
                h = self.acts[self.first][c : c + EVAL_BATCH]
                for i in range(self.first, NUM_BLOCKS):
                    h = student.blocks[i](h)
                    if str(i) in student.bridges:
                        h = student.bridges[str(i)](h)
                out.append(h.float())
        return torch.cat(out)


def _scores(val_logits: torch.Tensor, test_logits: torch.Tensor, s: Setting) -> dict:
    """The same four numbers as Setting.scores, from precomputed logits."""

    def pct(pred, ref):
        return (pred == ref).float().mean().item() * 100

    tp, vp = test_logits.argmax(-1), val_logits.argmax(-1)
    return {"test_accuracy": pct(tp, s.y_test), "test_agreement": pct(tp, s.teacher_test_pred),
            "val_accuracy": pct(vp, s.y_val), "val_agreement": pct(vp, s.teacher_val_pred)}


# --------------------------------------------------------------------------- the cached sweep
def graft_seeds(dataset: str, shots: int, seeds, profile="cpu", *, student_widths=None, data_root=None,
                output_root=None, device=None, stack: str = "auto", **schedule_overrides) -> list[dict]:
    """run_netgraft for several seeds, trained together; returns each seed's metrics, in order.

    Seeds already in the cache are read back; the others are trained in one run and stored in the
    entries run_netgraft(dataset, shots, seed, profile, ...) would use. `stack` picks how the students
    run ("auto", "loop" or "vmap", see the module docstring); it does not change the results.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    profile = get_profile(profile)
    sched = replace(profile.graft_for(D.check_dataset(dataset)), **schedule_overrides)
    t_spec = spec_from_config(teacher_config(dataset, profile))
    s_spec = student_spec(t_spec, tuple(student_widths) if student_widths else None)
    kw = {"data_root": data_root, "output_root": output_root, "device": device}
    settings = [prepare(dataset, shots, seed, profile, **kw) for seed in seeds]
    entries = [Entry(output_root, "netgraft", {**_base_config(s, "netgraft"), "schedule": sched,
                                               "student_widths": s_spec.widths}) for s in settings]
    todo = [k for k, e in enumerate(entries) if not e.done]
    if todo:
        results = _train_together([settings[k] for k in todo], sched, t_spec, s_spec, stack)
        for k, (metrics, tensors) in zip(todo, results):
            entries[k].start()
            for name, obj in tensors.items():
                entries[k].save_tensors(name, obj)
            entries[k].finish({**metrics, "cache_key": entries[k].key})
    return [e.metrics() for e in entries]


def _train_together(settings: list[Setting], sched: GraftSchedule, t_spec, s_spec,
                    stack: str) -> list[tuple[dict, dict]]:
    """Train the settings' seeds together; per seed (metrics as run_netgraft's, tensors to store)."""
    s0, S = settings[0], len(settings)
    teacher, seeds, shots = s0.teacher, [s.seed for s in settings], s0.shots
    t0 = time.perf_counter()
    parts = []
    for seed in seeds:
        torch.manual_seed(seed)  # as run_netgraft: the same initial student per seed
        parts.append(GraftParts.for_student(t_spec, s_spec).to(s0.x.device))
    stacked = stack_for(s0.x.device, stack)(parts)
    xs = torch.stack([s.x for s in settings])
    block_logs = graft_blocks_stacked(teacher, stacked, xs, sched, shots, seeds)
    val_b = SharedBoundaries(teacher, s0.x_val, stacked.first)
    test_b = SharedBoundaries(teacher, s0.x_test, stacked.first)

    def scores(a: int, b: int) -> list[dict]:
        v, t = val_b.hybrid_logits(stacked, teacher, a, b), test_b.hybrid_logits(stacked, teacher, a, b)
        return [_scores(v[k], t[k], s) for k, s in enumerate(settings)]

    blocks = [{} for _ in settings]
    for i in stacked.positions:
        for k, sc in enumerate(scores(i, i)):
            blocks[k][f"block{i + 1}"] = sc
    chains = [{} for _ in settings]

    def after_step(a: int, b: int) -> None:
        for k, sc in enumerate(scores(a, b)):
            chains[k][f"chain{a + 1}-{b + 1}"] = sc

    net_logs = graft_net_stacked(teacher, stacked, xs, sched, shots, seeds, on_step=after_step)
    train_wall = time.perf_counter() - t0
    trained = stacked.unstack()
    students = [export_student(teacher, p, s_spec, folded=True) for p in trained]
    static = {"teacher_params": count_params(teacher), "student_params": count_params(students[0]),
              "unfolded_params": count_params(export_student(teacher, trained[0], s_spec, folded=False)),
              "teacher_flops": count_flops(teacher), "student_flops": count_flops(students[0])}
    out = []
    for k, (s, p, student) in enumerate(zip(settings, trained, students)):
        unfolded = export_student(teacher, p, s_spec, folded=False)
        logits_f, logits_u = test_b.student_logits(student), test_b.student_logits(unfolded)
        out.append(({
            **_base_config(s, "netgraft"), "profile": s.profile.name,
            **_scores(val_b.student_logits(student), logits_f, s),
            "teacher_test_accuracy": s.teacher_metrics["test_accuracy"],
            "blocks": blocks[k], "chains": chains[k],
            "block_losses": block_logs[k].losses, "net_losses": net_logs[k].losses,
            # Shared by the stack: each seed is charged an equal share of the batched run.
            "block_stage_s": block_logs[k].wall_s / S, "net_stage_s": net_logs[k].wall_s / S,
            "train_s": train_wall / S, "wall_s": (time.perf_counter() - t0) / S,
            "batched_seeds": seeds, "batched_wall_s": time.perf_counter() - t0,
            "batched_stack": type(stacked).__name__,
            "fold_max_abs_logit_diff": (logits_f - logits_u).abs().max().item(),
            "fold_same_predictions": bool((logits_f.argmax(1) == logits_u.argmax(1)).all()),
            **static, "teacher_spec": t_spec, "student_spec": s_spec, "schedule": sched,
            "device": str(s.x.device), "torch_threads": torch.get_num_threads(), "data_source": s.data_source,
            "images": len(s.x),
        }, {"parts.pt": p.state_dict(), "student.pt": student.state_dict()}))
    return out
