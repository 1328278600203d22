"""One-stage adversarial training (Shen et al., "Training GANs in One Stage", CVPR 2021), for a GAN and for
data-free adversarial distillation (DFAD, Fang et al. 2019).

Two-stage training updates the discriminator (or, in DFAD, the student) from one forward/backward pass and
the generator from a second one. One-stage training runs one forward and one backward pass and reuses the
gradient that reaches the generated samples for the generator, rescaled per sample by
factor_i = dL_G/do_i / dL_D/do_i (o_i: the discriminator's output on sample i):

* symmetric games (L_G = -L_D on generated samples: the minimax GAN, DFAD's L1 discrepancy): factor = -1;
* the non-saturating GAN loss (L_D's fake term softplus(o), L_G = softplus(-o)): factor = -exp(-o).

A per-sample factor is exact only if sample i's output depends on sample i alone, so the discriminator here
has no BatchNorm (batch statistics couple the samples). A constant factor of -1 needs no such condition: it
reverses the gradient of the whole-batch loss, so DFAD's student may keep BatchNorm in train mode.
Exact means: equal to the two-stage gradients at equal parameters. In training, both players then step
together, whereas two-stage's generator step sees the discriminator after its update.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .cache import Entry, default_output_root
from .device import pick_device
from .evaluate import report
from .models import BlockNet, build
from .models.vgg import student_spec
from .profiles import get_profile
from .teacher import get_teacher, teacher_config, teacher_test_predictions
from .training import progress

SCHEMES = ("two_stage", "two_stage_reuse", "one_stage")
GAN_LOSSES = ("nonsaturating", "minimax")
LOGIT_FLOOR = -60.0  # below it sigmoid(o) underflows float32, and -exp(-o) is clamped (a no-gradient regime)


# --------------------------------------------------------------------------- the method
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


# --------------------------------------------------------------------------- networks
class Generator(nn.Sequential):
    """DCGAN generator for 32x32: z (B, z_dim) -> pixels in [-1, 1] through 4x4, 8x8, 16x16, 32x32."""

    def __init__(self, z_dim: int, width: int):
        w = width
        super().__init__(
            nn.Unflatten(1, (z_dim, 1, 1)),
            nn.ConvTranspose2d(z_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh(),
        )
        self.z_dim = z_dim
        _dcgan_init(self)


class Discriminator(nn.Sequential):
    """DCGAN discriminator for 32x32, one logit per image.

    No BatchNorm by default: with it (DCGAN's original, `batch_norm=True`) the samples of a batch share
    statistics, and the per-sample one-stage factor is no longer exact.
    """

    def __init__(self, width: int, batch_norm: bool = False):
        w = width

        def norm(c: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(c)] if batch_norm else []

        super().__init__(
            nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), *norm(2 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), *norm(4 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 1, 4, 1, 0), nn.Flatten(0),
        )
        _dcgan_init(self)


def _dcgan_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def to_teacher_input(pixels: torch.Tensor, dataset: str = "cifar10") -> torch.Tensor:
    """Generator pixels in [-1, 1] -> the teacher's normalised input space."""
    mean = torch.tensor(D.MEAN[dataset], device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(D.STD[dataset], device=pixels.device).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


# --------------------------------------------------------------------------- the two games
def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32 (autocast may hand back bf16), float64 kept for exactness checks."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class GanGame:
    """G against D on real images; `one_stage` and `d_stage` + `g_stage` fill the same gradients."""

    def __init__(self, generator: Generator, discriminator: nn.Module, loss: str = "nonsaturating"):
        if loss not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; use one of {GAN_LOSSES}")
        self.gen, self.critic, self.loss = generator, discriminator, loss

    def one_stage(self, batch: dict) -> dict:
        """One forward of D on real + fake, one backward; fake gradients rescaled on their way into G."""
        real = batch["real"]
        fake = self.gen(batch["z"])
        out = _full(self.critic(torch.cat([real, fake])))
        o_real, o_fake = out[: len(real)], out[len(real):]
        d_loss, g_loss = gan_d_loss(o_real, o_fake), gan_g_loss(o_fake, self.loss)
        rescale_grad(fake, generator_factor(o_fake, self.loss))
        d_loss.backward()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def d_stage(self, batch: dict, fake: torch.Tensor | None = None) -> dict:
        if fake is None:
            with torch.no_grad():
                fake = self.gen(batch["z"])
        real = batch["real"]
        out = _full(self.critic(torch.cat([real, fake.detach()])))
        d_loss = gan_d_loss(out[: len(real)], out[len(real):])
        d_loss.backward()
        return {"d_loss": d_loss.item()}

    def g_stage(self, batch: dict, fake: torch.Tensor | None = None) -> dict:
        """D frozen (no weight gradients computed); fresh noise `z2` unless the D stage's fakes are reused."""
        fake = self.gen(batch["z2"]) if fake is None else fake
        self.critic.requires_grad_(False)
        try:
            g_loss = gan_g_loss(_full(self.critic(fake)), self.loss)
            g_loss.backward()
        finally:
            self.critic.requires_grad_(True)
        return {"g_loss": g_loss.item()}


class DatafreeGame:
    """DFAD: the student minimises, the generator maximises, the mean L1 distance of student to teacher logits.

    The frozen teacher (eval mode) and the student together play the discriminator. Symmetric, so the
    one-stage factor is -1 and it is exact even with the student's BatchNorm in train mode.
    """

    def __init__(self, generator: Generator, student: nn.Module, teacher: nn.Module, dataset: str = "cifar10"):
        self.gen, self.student, self.teacher, self.dataset = generator, student, teacher, dataset
        teacher.eval().requires_grad_(False)

    def _discrepancy(self, fake: torch.Tensor, teacher_grad: bool) -> torch.Tensor:
        x = to_teacher_input(fake, self.dataset)
        with torch.set_grad_enabled(teacher_grad):
            t = _full(self.teacher(x))
        return F.l1_loss(_full(self.student(x)), t)

    def one_stage(self, batch: dict) -> dict:
        fake = self.gen(batch["z"])
        loss = self._discrepancy(fake, teacher_grad=True)
        rescale_grad(fake, -1.0)
        loss.backward()
        return {"d_loss": loss.item(), "g_loss": -loss.item()}

    def d_stage(self, batch: dict, fake: torch.Tensor | None = None) -> dict:
        if fake is None:
            with torch.no_grad():
                fake = self.gen(batch["z"])
        loss = self._discrepancy(fake.detach(), teacher_grad=False)
        loss.backward()
        return {"d_loss": loss.item()}

    def g_stage(self, batch: dict, fake: torch.Tensor | None = None) -> dict:
        fake = self.gen(batch["z2"]) if fake is None else fake
        self.student.requires_grad_(False)
        try:
            loss = -self._discrepancy(fake, teacher_grad=True)
            loss.backward()
        finally:
            self.student.requires_grad_(True)
        return {"g_loss": loss.item()}


def train_step(game, scheme: str, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, batch: dict) -> dict:
    """One iteration: one update of D (or the student) and one of G.

    `two_stage` follows the paper's count (Goodfellow et al.'s algorithm): fresh noise for the G stage, so G
    runs forward twice; `two_stage_reuse` reuses the D stage's fakes (as the PyTorch DCGAN example does).
    """
    if scheme == "one_stage":
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        out = game.one_stage(batch)
        opt_d.step()
        opt_g.step()
        return out
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {SCHEMES}")
    fake = game.gen(batch["z"]) if scheme == "two_stage_reuse" else None
    opt_d.zero_grad(set_to_none=True)
    out = game.d_stage(batch, fake)
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    out.update(game.g_stage(batch, fake))
    opt_g.step()
    return out


def gradient_gap(game, batch: dict) -> dict:
    """Largest |one-stage - two-stage| gradient entry over the largest two-stage entry, per player.

    Both schemes start from the same parameters and see the same noise (the G stage reuses `z`), so an
    exact one-stage scheme gives gaps at rounding level. Leaves the games' gradients cleared.
    """
    players = {"discriminator": game.critic if isinstance(game, GanGame) else game.student, "generator": game.gen}

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


# --------------------------------------------------------------------------- quality score
@torch.no_grad()
def penultimate_features(teacher: BlockNet, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The teacher's classifier hidden layer (after its BatchNorm1d, before the last Linear), eval mode."""
    was_training = teacher.training
    teacher.eval()
    head = nn.Sequential(*list(teacher.blocks[5])[:3])  # Flatten, Linear, BatchNorm1d; the last Linear left out
    out = [_full(head(teacher.run(x[i : i + batch_size], 0, 5))) for i in range(0, len(x), batch_size)]
    teacher.train(was_training)
    return torch.cat(out)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples), in float64."""
    a, b = a.double().cpu(), b.double().cpu()
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two sets of >= 2 feature rows of one width, got {tuple(a.shape)} and {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()  # Tr((A B)^1/2)
    return float((mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


@torch.no_grad()
def generate(gen: Generator, n: int, seed: int, device: torch.device, batch_size: int = 500,
             batch_stats: bool = False) -> torch.Tensor:
    """`n` samples (pixels in [-1, 1]) from fixed noise: eval mode, or (`batch_stats`) a train-mode copy of
    the generator, whose BatchNorm uses each batch's statistics as during training (the original is untouched)."""
    g_net = copy.deepcopy(gen).train() if batch_stats else gen
    was_training = gen.training
    if not batch_stats:
        gen.eval()
    g = torch.Generator().manual_seed(seed)
    out = [g_net(torch.randn(min(batch_size, n - i), gen.z_dim, generator=g).to(device))
           for i in range(0, n, batch_size)]
    gen.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def class_coverage(teacher: nn.Module, x: torch.Tensor, num_classes: int) -> dict:
    """How spread the teacher's predicted classes are over `x`: classes seen, and entropy / log(classes)."""
    pred = teacher(x).argmax(1)
    p = torch.bincount(pred, minlength=num_classes).double() / len(pred)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item() / math.log(num_classes)
    return {"synthetic_classes": int((p > 0).sum()), "synthetic_entropy": entropy}


# --------------------------------------------------------------------------- schedules per profile
@dataclass(frozen=True)
class TimingSchedule:
    """Per-iteration timing: warm-up, then `rounds` x `block` iterations per scheme, schemes interleaved."""

    warmup: int = 5
    rounds: int = 8
    block: int = 5


@dataclass(frozen=True)
class GanSchedule:
    width: int = 32  # DCGAN's ngf = ndf (64 in the DCGAN paper)
    z_dim: int = 100
    batch_size: int = 64
    iterations: int = 1500  # of the two-stage run; the one-stage run gets its wall-clock
    lr: float = 2e-4
    beta1: float = 0.5
    loss: str = "nonsaturating"
    eval_every: int = 250
    fd_samples: int = 5000
    train_limit: int | None = None
    timing: TimingSchedule = TimingSchedule()


@dataclass(frozen=True)
class DatafreeSchedule:
    """DFAD's optimisers (SGD 0.1 for the student, Adam 1e-3 for G), one student step per generator step."""

    width: int = 32
    z_dim: int = 256
    batch_size: int = 128
    iterations: int = 400  # of the two-stage run; the one-stage run gets its wall-clock
    lr_student: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_generator: float = 1e-3
    eval_every: int = 100
    timing: TimingSchedule = TimingSchedule()


GAN_SCHEDULES = {
    "tiny": GanSchedule(width=8, batch_size=16, iterations=12, eval_every=6, fd_samples=200, train_limit=512,
                        timing=TimingSchedule(warmup=1, rounds=2, block=2)),
    "cpu": GanSchedule(),
    "paper": GanSchedule(width=64, iterations=50_000, eval_every=5000, fd_samples=10_000),
}
DATAFREE_SCHEDULES = {
    "tiny": DatafreeSchedule(width=8, z_dim=32, batch_size=16, iterations=10, eval_every=5,
                             timing=TimingSchedule(warmup=1, rounds=2, block=2)),
    "cpu": DatafreeSchedule(iterations=400, eval_every=80, timing=TimingSchedule(warmup=3, rounds=6, block=4)),
    "paper": DatafreeSchedule(width=64, batch_size=256, iterations=25_000, eval_every=1000),
}
MAX_ITERATIONS_FACTOR = 4  # the wall-clock-matched run stops here whatever the clock says
COVERAGE_SAMPLES = 500  # synthetic images whose teacher classes are counted at each data-free checkpoint


def gan_schedule(profile) -> GanSchedule:
    return _lookup(GAN_SCHEDULES, profile, "GAN")


def datafree_schedule(profile) -> DatafreeSchedule:
    return _lookup(DATAFREE_SCHEDULES, profile, "data-free")


def _lookup(table: dict, profile, what: str):
    name = get_profile(profile).name
    if name not in table:
        raise ValueError(f"no {what} schedule for profile {name!r}; nbgraft.onestage knows {sorted(table)}")
    return table[name]


# --------------------------------------------------------------------------- experiment set-up
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Noise:
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
        z = torch.randn(2, self.bs, self.z_dim, generator=self.g).to(self.device)
        batch = {"z": z[0], "z2": z[1]}
        if self.real is not None:
            batch["real"] = self._real_batch()
        return batch


@dataclass
class _Gan:
    game: GanGame
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer


def _build_gan(sched: GanSchedule, seed: int, device: torch.device) -> _Gan:
    torch.manual_seed(seed)
    gen, critic = Generator(sched.z_dim, sched.width).to(device), Discriminator(sched.width).to(device)
    betas = (sched.beta1, 0.999)
    return _Gan(GanGame(gen, critic, sched.loss), torch.optim.Adam(critic.parameters(), sched.lr, betas=betas),
                torch.optim.Adam(gen.parameters(), sched.lr, betas=betas))


def _build_datafree(sched: DatafreeSchedule, teacher: BlockNet, seed: int, device: torch.device) -> _Gan:
    torch.manual_seed(seed)
    gen = Generator(sched.z_dim, sched.width).to(device)
    student = build(student_spec(teacher.spec, batch_norm=teacher.spec.batch_norm)).to(device).train()
    opt_s = torch.optim.SGD(student.parameters(), sched.lr_student, momentum=sched.momentum,
                            weight_decay=sched.weight_decay)
    return _Gan(DatafreeGame(gen, student, teacher), opt_s, torch.optim.Adam(gen.parameters(), sched.lr_generator))


def _real_pool(profile, data_root) -> tuple[torch.Tensor, np.ndarray, D.ImageData]:
    """CIFAR-10 train images outside the validation pool (uint8 NCHW) for the GAN, and the pool's indices."""
    data = D.load_dataset("cifar10", data_root)
    split = D.make_split(data, get_profile(profile).val_per_class["cifar10"])
    limit = gan_schedule(profile).train_limit
    idx = split.teacher_train[:limit]
    return torch.from_numpy(np.ascontiguousarray(data.x_train[idx])).permute(0, 3, 1, 2).contiguous(), split.val, data


def _teacher(profile, data_root, output_root, device) -> tuple[BlockNet, dict, str]:
    teacher, tm = get_teacher("cifar10", profile, data_root=data_root, output_root=output_root, device=device)
    return teacher, tm, Entry(output_root, "teacher", teacher_config("cifar10", profile, data_root=data_root)).key


# --------------------------------------------------------------------------- the exactness check
def gradient_checks(profile="cpu", seed: int = 0, *, batch_size: int = 16, data_root=None,
                    output_root=None) -> list[dict]:
    """`gradient_gap` of this profile's networks on one fixed batch of real CIFAR-10 images, in float64 on
    the CPU: the GAN with either loss, the GAN with a BatchNorm discriminator (where the per-sample factor
    must fail), and data-free distillation with the book's teacher and a train-mode BatchNorm student.
    """
    profile = get_profile(profile)
    gs, ds = gan_schedule(profile), datafree_schedule(profile)
    g = torch.Generator().manual_seed(seed)
    real = _real_pool(profile, data_root)[0][:batch_size].double() / 127.5 - 1
    gan_batch = {"real": real, "z": torch.randn(batch_size, gs.z_dim, generator=g, dtype=torch.float64)}
    cases = [("GAN, non-saturating loss", "-exp(-o)", "nonsaturating", False, True),
             ("GAN, minimax loss", "-1", "minimax", False, True),
             ("GAN, non-saturating loss, BatchNorm in D", "-exp(-o)", "nonsaturating", True, False)]
    rows = []
    for name, factor, loss, bn, exact in cases:
        torch.manual_seed(seed)
        game = GanGame(Generator(gs.z_dim, gs.width).double(), Discriminator(gs.width, bn).double(), loss)
        rows.append({"game": name, "factor": factor, "exact_in_theory": exact, **gradient_gap(game, gan_batch)})
    teacher = _teacher(profile, data_root, output_root, torch.device("cpu"))[0]
    teacher = copy.deepcopy(teacher).double()
    torch.manual_seed(seed)
    game = DatafreeGame(Generator(ds.z_dim, ds.width).double(), build(student_spec(teacher.spec, batch_norm=teacher.spec.batch_norm)).double().train(),
                        teacher)
    z = torch.randn(batch_size, ds.z_dim, generator=g, dtype=torch.float64)
    rows.append({"game": "data-free distillation (student BatchNorm in train mode)", "factor": "-1",
                 "exact_in_theory": True, **gradient_gap(game, {"z": z})})
    return rows


# --------------------------------------------------------------------------- timing
def time_schemes(game: str, profile="cpu", seed: int = 0, *, schemes=SCHEMES, data_root=None, output_root=None,
                 device=None) -> dict:
    """Median seconds per iteration of each scheme, measured in one process, schemes interleaved; cached.

    Each scheme trains its own copy of the same initial networks on the same batches, after a warm-up.
    """
    if game not in ("gan", "datafree"):
        raise ValueError(f"unknown game {game!r}; use 'gan' or 'datafree'")
    bad = [s for s in schemes if s not in SCHEMES]
    if bad:
        raise ValueError(f"unknown schemes {bad}; use some of {SCHEMES}")
    device = pick_device(device)
    profile = get_profile(profile)
    sched = gan_schedule(profile) if game == "gan" else datafree_schedule(profile)
    teacher, teacher_key = None, None  # the GAN's timing does not involve the teacher
    if game == "datafree":
        teacher, _, teacher_key = _teacher(profile, data_root, output_root, device)
    entry = Entry(output_root, "onestage_timing", {"game": game, "profile": profile.name, "schedule": sched,
                                                   "schemes": list(schemes), "seed": seed, "teacher": teacher_key,
                                                   "device": device.type})
    if entry.done:
        return entry.metrics()
    real = _real_pool(profile, data_root)[0] if game == "gan" else None
    runs = {s: (_build_gan(sched, seed, device) if game == "gan" else _build_datafree(sched, teacher, seed, device),
                _Noise(sched.z_dim, sched.batch_size, seed + 1, device, real)) for s in schemes}
    t = sched.timing
    times: dict[str, list[float]] = {s: [] for s in schemes}
    for r in range(t.rounds + 1):
        order = list(schemes) if r % 2 == 0 else list(reversed(schemes))
        for s in order:
            m, noise = runs[s]
            for _ in range(t.warmup if r == 0 else t.block):
                batch = noise()
                _sync(device)
                t0 = time.perf_counter()
                train_step(m.game, s, m.opt_d, m.opt_g, batch)
                _sync(device)
                if r > 0:  # round 0 is the warm-up
                    times[s].append(time.perf_counter() - t0)
    median = {s: statistics.median(v) for s, v in times.items()}
    ratios = {f"one_stage/{s}": median["one_stage"] / median[s]
              for s in schemes if s != "one_stage" and "one_stage" in median}
    return entry.finish({"game": game, "profile": profile.name, "median_s": median, "ratios": ratios, "times_s": times,
                         "batch_size": sched.batch_size, "device": str(device),
                         "torch_threads": torch.get_num_threads()})


# --------------------------------------------------------------------------- training runs
def _train(m: _Gan, scheme: str, noise: _Noise, iterations: int, budget_s: float | None, eval_every: int,
           evaluate, label: str) -> dict:
    """Train for `iterations` (or, given `budget_s`, until that many training seconds have passed).

    `evaluate()` runs at iteration 0, every `eval_every`, at `iterations` and at the end; its time is not counted.
    """
    cap = iterations if budget_s is None else iterations * MAX_ITERATIONS_FACTOR
    losses = {"d_loss": [], "g_loss": []}
    checkpoints = [{"iteration": 0, "train_s": 0.0, **evaluate()}]
    train_s, it = 0.0, 0
    bar = progress(total=cap if budget_s is None else None, desc=label)
    while it < cap and (budget_s is None or train_s < budget_s):
        batch = noise()
        _sync(noise.device)
        t0 = time.perf_counter()
        out = train_step(m.game, scheme, m.opt_d, m.opt_g, batch)
        _sync(noise.device)
        train_s += time.perf_counter() - t0
        it += 1
        bar.update()
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


def _check_scheme(scheme: str) -> None:
    if scheme not in ("two_stage", "one_stage"):
        raise ValueError(f"training runs use scheme 'two_stage' or 'one_stage', got {scheme!r}")


def run_gan(scheme: str, profile="cpu", seed: int = 0, *, data_root=None, output_root=None, device=None) -> dict:
    """DCGAN on CIFAR-10, two-stage for the profile's iterations, or one-stage for the two-stage run's
    training seconds (it records its state at the same iteration count on the way); cached.

    Quality: Fréchet distance of the teacher's penultimate features between generated images and the
    validation pool (held out of GAN training). Not the standard FID (no Inception network offline).
    """
    _check_scheme(scheme)
    device = pick_device(device)
    profile = get_profile(profile)
    sched = gan_schedule(profile)
    teacher, tm, teacher_key = _teacher(profile, data_root, output_root, device)
    config = {"game": "gan", "scheme": scheme, "profile": profile.name, "seed": seed, "schedule": sched,
              "teacher": teacher_key}
    budget_s = None
    if scheme == "one_stage":
        ref = run_gan("two_stage", profile, seed, data_root=data_root, output_root=output_root, device=device)
        budget_s, config["budget_from"] = ref["train_s"], ref["cache_key"]
    entry = Entry(output_root, "gan", config)
    if entry.done:
        return entry.metrics()
    entry.start()
    real, val, data = _real_pool(profile, data_root)
    n_fd = min(sched.fd_samples, len(val))
    val_feat = penultimate_features(teacher, D.to_tensor(data.x_train[val[:n_fd]], "cifar10", device))
    train_feat = penultimate_features(teacher, to_teacher_input(real[-n_fd:].to(device).float() / 127.5 - 1))
    m = _build_gan(sched, seed, device)

    def evaluate() -> dict:
        fake = generate(m.game.gen, n_fd, seed + 2, device)
        return {"frechet": frechet_distance(penultimate_features(teacher, to_teacher_input(fake)), val_feat)}

    log = _train(m, scheme, _Noise(sched.z_dim, sched.batch_size, seed + 1, device, real), sched.iterations,
                 budget_s, sched.eval_every, evaluate, f"GAN {scheme}")
    entry.save_tensors("samples.pt", to_uint8(generate(m.game.gen, 64, seed + 3, device)))
    entry.save_tensors("generator.pt", m.game.gen.state_dict())
    return entry.finish({**config, **log, "budget_s": budget_s, "frechet": log["checkpoints"][-1]["frechet"],
                         "frechet_real_vs_real": frechet_distance(train_feat, val_feat), "fd_samples": n_fd,
                         "teacher_test_accuracy": tm["test_accuracy"], "feature_dim": int(val_feat.shape[1]),
                         "device": str(device), "torch_threads": torch.get_num_threads(), "cache_key": entry.key})


def run_datafree(scheme: str, profile="cpu", seed: int = 0, *, data_root=None, output_root=None, device=None) -> dict:
    """DFAD on CIFAR-10 from the book's teacher, with no real image; two-stage for the profile's
    iterations, one-stage for the two-stage run's training seconds; cached. Test accuracy is only reported.
    """
    _check_scheme(scheme)
    device = pick_device(device)
    profile = get_profile(profile)
    sched = datafree_schedule(profile)
    teacher, tm, teacher_key = _teacher(profile, data_root, output_root, device)
    config = {"game": "datafree", "scheme": scheme, "profile": profile.name, "seed": seed, "schedule": sched,
              "teacher": teacher_key, "test_limit": profile.test_limit}
    budget_s = None
    if scheme == "one_stage":
        ref = run_datafree("two_stage", profile, seed, data_root=data_root, output_root=output_root, device=device)
        budget_s, config["budget_from"] = ref["train_s"], ref["cache_key"]
    entry = Entry(output_root, "datafree", config)
    if entry.done:
        return entry.metrics()
    entry.start()
    data = D.load_dataset("cifar10", data_root)
    x_test, y_test = D.test_arrays(data, profile.test_limit)
    x_test, y_test = D.to_tensor(x_test, "cifar10", device), torch.from_numpy(y_test).to(device)
    t_pred = teacher_test_predictions("cifar10", profile, data_root=data_root, output_root=output_root).to(device)
    m = _build_datafree(sched, teacher, seed, device)

    def evaluate() -> dict:
        r = report(m.game.student, x_test, y_test, t_pred)
        fake = generate(m.game.gen, COVERAGE_SAMPLES, seed + 2, device, batch_stats=True)
        return {"test_accuracy": r["accuracy"], "test_agreement": r["agreement"],
                **class_coverage(teacher, to_teacher_input(fake), teacher.spec.num_classes)}

    log = _train(m, scheme, _Noise(sched.z_dim, sched.batch_size, seed + 1, device), sched.iterations, budget_s,
                 sched.eval_every, evaluate, f"data-free {scheme}")
    at_iterations = next(c for c in log["checkpoints"] if c["iteration"] == min(sched.iterations, log["iterations"]))
    entry.save_tensors("student.pt", m.game.student.state_dict())
    entry.save_tensors("samples.pt", to_uint8(generate(m.game.gen, 64, seed + 3, device, batch_stats=True)))
    return entry.finish({**config, **log, "budget_s": budget_s, **log["checkpoints"][-1],
                         "at_two_stage_iterations": at_iterations, "teacher_test_accuracy": tm["test_accuracy"],
                         "real_images": 0, "device": str(device), "torch_threads": torch.get_num_threads(),
                         "cache_key": entry.key})


def load_samples(metrics: dict, output_root=None) -> torch.Tensor:
    """The 64 uint8 samples (N, 3, 32, 32) saved with a finished `run_gan` or `run_datafree`."""
    root = Path(output_root if output_root is not None else default_output_root())
    return torch.load(root / "cache" / metrics["game"] / metrics["cache_key"] / "samples.pt", weights_only=True)
