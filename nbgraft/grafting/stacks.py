"""Several seeds' students in one training step, each with its own few-shot draw, exactly as if run alone.

- `loop`: one after another inside each step, as plain modules. Bit-for-bit the single runs; on a CPU,
  where convolutions are compute-bound, as fast as `vmap` (measured) and so the default there.
- `vmap`: stacked along a leading seed axis (`torch.func.stack_module_state`) and run with
  `vmap(functional_call(...))`, so each layer is one batched op for all seeds; the default on a GPU,
  where many tiny kernels are the cost. BatchNorm running statistics are stacked buffers updated in
  place per seed; one Adam over stacked tensors is S independent Adams (Adam is elementwise). Equal to
  the single runs up to float rounding (grouped instead of plain convolutions). Always in fp32: autocast
  does not reach inside vmap.

A single run is a loop stack of one (nbgraft.grafting.engine), so each stage is written once.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..device import no_autocast, policy
from ..models import BlockNet
from ..schedules import GraftSchedule
from .losses import LossPlan, feature_loss, graft_loss, run_hybrid
from .parts import GraftParts, Grafted


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
