"""One-stage adversarial training (Shen et al., "Training GANs in One Stage", CVPR 2021): the method, for any
two-player game; the games themselves are in nbgraft.gan and nbgraft.dfad.

Two-stage training updates the discriminator (or, in data-free distillation, the student) from one
forward/backward pass and the generator from a second one. One-stage training runs one forward and one
backward pass and reuses the gradient that reaches the generated samples for the generator, rescaled per
sample by factor_i = dL_G/do_i / dL_D/do_i (o_i: the discriminator's output on sample i):

* symmetric games (L_G = -L_D on generated samples: the minimax GAN, DFAD's L1 discrepancy): factor = -1;
* the non-saturating GAN loss (L_D's fake term softplus(o), L_G = softplus(-o)): factor = -exp(-o).

When is it exact (equal to the two-stage gradients at equal parameters)? A per-sample factor needs o_i to
depend on sample i alone; BatchNorm in train mode couples the samples of a batch through its statistics.
A constant -1 needs less: that L_G equal minus the fake part of L_D *as a function of the whole batch D
sees*. That holds for DFAD with a train-mode BatchNorm student, and for a BatchNorm discriminator that sees
real and fake images in separate passes; it fails when real and fake share one concatenated batch, since
two-stage's generator step then sees statistics of the fakes alone. In training both players step
together, whereas two-stage's generator step sees the discriminator after its update.

A game here is an object with `gen`, `disc` (the player trained on L_D) and three methods that fill the
players' gradients: `one_stage(batch)`, `d_stage(batch, fake=None)`, `g_stage(batch, fake=None, freeze=True)`;
each returns its losses as detached tensors (reading them is a host sync, left to the caller).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..training import progress

# two_stage: fresh noise for G's step, D frozen in it (no weight gradients computed); two_stage_unfrozen: the
# same, with D's weight gradients computed in G's step and discarded (as DCGAN's and DFAD's code do);
# two_stage_reuse: G's step reuses D's step's fakes (D frozen); one_stage: the method.
SCHEMES = ("two_stage", "two_stage_unfrozen", "two_stage_reuse", "one_stage")
GAN_LOSSES = ("nonsaturating", "minimax")
LOGIT_FLOOR = -60.0  # below it sigmoid(o) underflows float32, and -exp(-o) is clamped (a no-gradient regime)
MAX_ITERATIONS_FACTOR = 4  # a wall-clock-matched run stops here whatever the clock says


# --------------------------------------------------------------------------- losses and the factor
def gan_d_loss(o_real: torch.Tensor, o_fake: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))) on logits, each term a mean over its half of the batch."""
    return F.softplus(-o_real).mean() + F.softplus(o_fake).mean()


def gan_g_loss(o_fake: torch.Tensor, loss: str) -> torch.Tensor:
    """`nonsaturating`: -log D(G(z)); `minimax`: log(1 - D(G(z))), the negative of L_D's fake term."""
    if loss == "nonsaturating":
        return F.softplus(-o_fake).mean()
    if loss == "minimax":
        return -F.softplus(o_fake).mean()
    raise ValueError(f"unknown GAN loss {loss!r}; use one of {GAN_LOSSES}")


def generator_factor(o_fake: torch.Tensor, loss: str) -> torch.Tensor | float:
    """Per-sample dL_G/do over dL_D/do on generated samples: what turns D's gradient into G's."""
    if loss == "minimax":
        return -1.0
    if loss == "nonsaturating":
        return -torch.exp(-o_fake.detach().clamp(min=LOGIT_FLOOR))
    raise ValueError(f"unknown GAN loss {loss!r}; use one of {GAN_LOSSES}")


def rescale_grad(x: torch.Tensor, factor: torch.Tensor | float) -> None:
    """Multiply the gradient reaching `x` (one factor per sample, or one for all) before it flows on."""
    if isinstance(factor, torch.Tensor):
        factor = factor.reshape(-1, *([1] * (x.ndim - 1)))
    x.register_hook(lambda g: (g * factor).to(g.dtype))


def full(t: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32 (autocast may hand back bf16), float64 kept for exactness checks."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# --------------------------------------------------------------------------- one iteration, both schemes
def train_step(game, scheme: str, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, batch: dict,
               extra: Sequence[dict] = ()) -> dict:
    """One iteration: a plain D step on each batch of `extra` (DFAD takes several student steps per generator
    step), then one update of D and one of G, in one pass (`one_stage`) or two.

    `two_stage` follows the paper's count (Goodfellow et al.'s algorithm): fresh noise `z2` for the G step,
    so G runs forward twice; `two_stage_reuse` reuses the D step's fakes (as the PyTorch DCGAN example does).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {SCHEMES}")
    for b in extra:
        opt_d.zero_grad(set_to_none=True)
        game.d_stage(b)
        opt_d.step()
    if scheme == "one_stage":
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        out = game.one_stage(batch)
        opt_d.step()
        opt_g.step()
        return out
    fake = game.gen(batch["z"]) if scheme == "two_stage_reuse" else None
    opt_d.zero_grad(set_to_none=True)
    out = game.d_stage(batch, fake)
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    out.update(game.g_stage(batch, fake, freeze=scheme != "two_stage_unfrozen"))
    opt_g.step()
    return out


def gradient_gap(game, batch: dict) -> dict:
    """Largest |one-stage - two-stage| gradient entry over the largest two-stage entry, per player.

    Both schemes start from the same parameters and see the same noise (the G stage reuses `z`), so an
    exact one-stage scheme gives gaps at rounding level. Leaves the games' gradients cleared.
    """
    players = {"discriminator": game.disc, "generator": game.gen}

    def grads(m: nn.Module) -> list[torch.Tensor]:
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in m.parameters()]

    def clear() -> None:
        for m in players.values():
            m.zero_grad(set_to_none=True)

    same = {**batch, "z2": batch["z"]}
    clear()
    game.d_stage(same)
    two = {"discriminator": grads(players["discriminator"])}
    clear()
    game.g_stage(same)
    two["generator"] = grads(players["generator"])
    clear()
    game.one_stage(batch)
    one = {k: grads(m) for k, m in players.items()}
    clear()
    gaps = {}
    for k in players:
        scale = max(g.abs().max().item() for g in two[k])
        if scale == 0:
            raise ValueError(f"the two-stage {k} gradients are all zero on this batch: nothing to compare")
        gaps[k] = max((a - b).abs().max().item() for a, b in zip(one[k], two[k])) / scale
    return gaps


# --------------------------------------------------------------------------- runs: noise, training, timing
@dataclass
class Players:
    """A game and its two optimisers (D's, G's)."""

    game: object
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer


@dataclass(frozen=True)
class TimingSchedule:
    """Per-iteration timing: warm-up, then `rounds` x `block` iterations per scheme, schemes interleaved.

    On a shared machine a burst of load hits whichever scheme runs then; blocks of one iteration spread it
    over all schemes, and the median leaves it out."""

    warmup: int = 5
    rounds: int = 8
    block: int = 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Noise:
    """Noise (and real batches) drawn from seeded generators, so every scheme sees the same stream."""

    def __init__(self, z_dim: int, batch_size: int, seed: int, device: torch.device, real: torch.Tensor | None = None):
        self.z_dim, self.bs, self.device, self.real = z_dim, batch_size, device, real
        self.g = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)

    def _real_batch(self) -> torch.Tensor:
        if len(self._order) < self.bs:
            self._order = torch.cat([self._order, torch.randperm(len(self.real), generator=self.g)])
        idx, self._order = self._order[: self.bs], self._order[self.bs:]
        return self.real[idx].to(self.device).float().div_(127.5).sub_(1)

    def __call__(self) -> dict:
        """An iteration's batch: `z` (and `real`) for D's step or the one-stage pass, `z2` for G's step."""
        z = torch.randn(2, self.bs, self.z_dim, generator=self.g).to(self.device)
        batch = {"z": z[0], "z2": z[1]}
        if self.real is not None:
            batch["real"] = self._real_batch()
        return batch

    def iteration(self, d_steps: int = 1) -> tuple[dict, list[dict]]:
        """(the iteration's batch, batches of its d_steps - 1 plain D steps, drawn first)."""
        extra = [self() for _ in range(d_steps - 1)]
        return self(), extra


def train_run(m: Players, scheme: str, noise: Noise, iterations: int, budget_s: float | None, eval_every: int,
              evaluate: Callable[[], dict], label: str, d_steps: int = 1) -> dict:
    """Train for `iterations` (or, given `budget_s`, until that many training seconds have passed).

    `evaluate()` runs at iteration 0, every `eval_every`, at `iterations` and at the end; its time is not counted.
    """
    cap = iterations if budget_s is None else iterations * MAX_ITERATIONS_FACTOR
    losses = {"d_loss": [], "g_loss": []}
    checkpoints = [{"iteration": 0, "train_s": 0.0, **evaluate()}]
    train_s, it = 0.0, 0
    bar = progress(total=cap if budget_s is None else None, desc=label)
    while it < cap and (budget_s is None or train_s < budget_s):
        batch, extra = noise.iteration(d_steps)
        sync(noise.device)
        t0 = time.perf_counter()
        out = train_step(m.game, scheme, m.opt_d, m.opt_g, batch, extra)
        sync(noise.device)
        train_s += time.perf_counter() - t0
        it += 1
        bar.update()
        out = {k: float(out[k]) for k in losses}  # the games hand back tensors: read after the timed step
        for k in losses:
            losses[k].append(out[k])
        if not all(math.isfinite(out[k]) for k in losses):
            raise FloatingPointError(f"{label}: loss is {out} at iteration {it}; lower the learning rate")
        if it % eval_every == 0 or it == iterations:
            checkpoints.append({"iteration": it, "train_s": train_s, **evaluate()})
    bar.close()
    if checkpoints[-1]["iteration"] != it:
        checkpoints.append({"iteration": it, "train_s": train_s, **evaluate()})
    return {"iterations": it, "train_s": train_s, "s_per_iteration": train_s / max(1, it),
            "checkpoints": checkpoints, "losses": losses}


def time_iterations(runs: dict[str, tuple[Players, Noise]], timing: TimingSchedule, device: torch.device,
                    d_steps: int = 1) -> dict:
    """Median seconds per iteration of each scheme (`runs`: scheme -> its own players and noise), schemes
    interleaved in blocks, alternating order, after a warm-up round; one-stage's median over each other's."""
    times: dict[str, list[float]] = {s: [] for s in runs}
    for r in range(timing.rounds + 1):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for s in order:
            m, noise = runs[s]
            for _ in range(timing.warmup if r == 0 else timing.block):
                batch, extra = noise.iteration(d_steps)
                sync(device)
                t0 = time.perf_counter()
                train_step(m.game, s, m.opt_d, m.opt_g, batch, extra)
                sync(device)
                if r > 0:  # round 0 is the warm-up
                    times[s].append(time.perf_counter() - t0)
    median = {s: statistics.median(v) for s, v in times.items()}
    ratios = {f"one_stage/{s}": median["one_stage"] / median[s]
              for s in runs if s != "one_stage" and "one_stage" in median}
    return {"median_s": median, "ratios": ratios, "times_s": times}


def run_config(schedule) -> dict:
    """A schedule as a training run's cache key sees it: without its timing, which the run does not use."""
    return {k: v for k, v in asdict(schedule).items() if k != "timing"}


def check_training_scheme(scheme: str) -> None:
    if scheme not in ("two_stage", "one_stage"):
        raise ValueError(f"training runs use scheme 'two_stage' or 'one_stage', got {scheme!r}")


def wall_clock_budget(run, scheme: str, profile, seed: int, **kw) -> tuple[float | None, dict]:
    """A one-stage run gets the two-stage run's training seconds (that run is computed or read first);
    returns (budget or None, what the one-stage run's cache key records of it)."""
    if scheme != "one_stage":
        return None, {}
    ref = run("two_stage", profile, seed, **kw)
    return ref["train_s"], {"budget_from": ref["cache_key"]}
