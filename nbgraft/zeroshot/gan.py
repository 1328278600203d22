"""A DCGAN on CIFAR-10, trained in two stages or one (nbgraft.onestage), scored with the book's teacher.

No Inception network is available offline, so quality is the Fréchet distance between Gaussians fitted to
the teacher's penultimate features of generated and held-out real images: comparable within one chapter and
profile only, not the standard FID. The generator here also serves data-free distillation (nbgraft.dfad).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import data as D
from ..cache import Entry, default_output_root
from ..device import machine, pick_device
from ..models import BlockNet
from .onestage import (GAN_LOSSES, Noise, Players, TimingSchedule, check_training_scheme, full, gan_d_loss, gan_g_loss,
                       generator_factor, rescale_grad, run_config, train_run, wall_clock_budget)
from ..profiles import get_profile, schedule_for
from ..runs.teacher import get_teacher, teacher_entry


# --------------------------------------------------------------------------- networks
class Generator(nn.Sequential):
    """DCGAN generator for 32x32: z (B, z_dim) -> pixels in [-1, 1] through 4x4, 8x8, 16x16, 32x32.

    `normalise` appends BatchNorm2d(3, affine=False) after the Tanh, as DFAD's generator ends: the images
    then leave in a normalised input space (per channel mean 0, std 1 over the batch) instead of as pixels.
    """

    def __init__(self, z_dim: int, width: int, normalise: bool = False):
        w = width
        super().__init__(
            nn.Unflatten(1, (z_dim, 1, 1)),
            nn.ConvTranspose2d(z_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh(),
            *([nn.BatchNorm2d(3, affine=False)] if normalise else []),
        )
        self.z_dim, self.normalise = z_dim, normalise
        _dcgan_init(self)


class Discriminator(nn.Sequential):
    """DCGAN discriminator for 32x32, one logit per image.

    No BatchNorm by default: with it (DCGAN's original, `batch_norm=True`) the samples of a batch share
    statistics, and the one-stage gradients are exact only in the cases nbgraft.onestage names.
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
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _stats(x: torch.Tensor, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    return D.channel_stats(D.MEAN[dataset], D.STD[dataset], x.device, x.dtype)


def to_teacher_input(pixels: torch.Tensor, dataset: str = "cifar10") -> torch.Tensor:
    """Pixels in [-1, 1] -> the teacher's normalised input space."""
    mean, std = _stats(pixels, dataset)
    return ((pixels + 1) / 2 - mean) / std


def to_pixels(x: torch.Tensor, dataset: str = "cifar10") -> torch.Tensor:
    """The teacher's input space -> pixels in [-1, 1] (unclipped): for showing normalised generators' images."""
    mean, std = _stats(x, dataset)
    return (x * std + mean) * 2 - 1


def tanh_pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """A generator's pixels in [-1, 1] -> 8-bit pixels (for the stored samples)."""
    return ((pixels.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


# --------------------------------------------------------------------------- the game
class GanGame:
    """G against D on real images; `one_stage` and `d_stage` + `g_stage` fill the same gradients.

    D sees real and fake images in one concatenated batch, or (`separate_passes`) in two forward passes,
    so that a BatchNorm D normalises the fakes by their own statistics in both schemes.
    """

    def __init__(self, generator: Generator, discriminator: nn.Module, loss: str = "nonsaturating",
                 separate_passes: bool = False):
        if loss not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; use one of {GAN_LOSSES}")
        self.gen, self.disc, self.loss, self.separate_passes = generator, discriminator, loss, separate_passes

    def _outputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.separate_passes:
            return full(self.disc(real)), full(self.disc(fake))
        out = full(self.disc(torch.cat([real, fake])))
        return out[: len(real)], out[len(real):]

    def one_stage(self, batch: dict) -> dict:
        """One forward of D on real + fake, one backward; fake gradients rescaled on their way into G."""
        fake = self.gen(batch["z"])
        o_real, o_fake = self._outputs(batch["real"], fake)
        d_loss, g_loss = gan_d_loss(o_real, o_fake), gan_g_loss(o_fake, self.loss)
        rescale_grad(fake, generator_factor(o_fake, self.loss))
        d_loss.backward()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def d_stage(self, batch: dict, fake: torch.Tensor | None = None) -> dict:
        if fake is None:
            with torch.no_grad():
                fake = self.gen(batch["z"])
        d_loss = gan_d_loss(*self._outputs(batch["real"], fake.detach()))
        d_loss.backward()
        return {"d_loss": d_loss.detach()}

    def g_stage(self, batch: dict, fake: torch.Tensor | None = None, freeze: bool = True) -> dict:
        """Fresh noise `z2` unless the D stage's fakes are reused; `freeze`: no weight gradients for D."""
        fake = self.gen(batch["z2"]) if fake is None else fake
        self.disc.requires_grad_(not freeze)
        try:
            g_loss = gan_g_loss(full(self.disc(fake)), self.loss)
            g_loss.backward()
        finally:
            self.disc.requires_grad_(True)
        return {"g_loss": g_loss.detach()}


# --------------------------------------------------------------------------- quality score
@torch.no_grad()
def penultimate_features(teacher: BlockNet, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The teacher's classifier hidden layer (after its BatchNorm1d, before the last Linear), eval mode."""
    was_training = teacher.training
    teacher.eval()
    head = nn.Sequential(*list(teacher.blocks[5])[:3])  # Flatten, Linear, BatchNorm1d; the last Linear left out
    out = [full(head(teacher.run(x[i : i + batch_size], 0, 5))) for i in range(0, len(x), batch_size)]
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
    """`n` samples from fixed noise: eval mode, or (`batch_stats`) a train-mode copy of the generator, whose
    BatchNorm uses each batch's statistics as during training (the original is untouched)."""
    g_net = copy.deepcopy(gen).train() if batch_stats else gen
    was_training = gen.training
    if not batch_stats:
        gen.eval()
    g = torch.Generator().manual_seed(seed)
    out = [g_net(torch.randn(min(batch_size, n - i), gen.z_dim, generator=g).to(device))
           for i in range(0, n, batch_size)]
    gen.train(was_training)
    return torch.cat(out)


def load_samples(metrics: dict, output_root=None) -> torch.Tensor:
    """The 64 uint8 samples (N, 3, 32, 32) saved with a finished `run_gan` or `nbgraft.dfad.run_datafree`."""
    root = Path(output_root if output_root is not None else default_output_root())
    return torch.load(root / "cache" / metrics["game"] / metrics["cache_key"] / "samples.pt", weights_only=True)


# --------------------------------------------------------------------------- schedules per profile
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


GAN_SCHEDULES = {
    "tiny": GanSchedule(width=8, batch_size=16, iterations=12, eval_every=6, fd_samples=200, train_limit=512,
                        timing=TimingSchedule(warmup=1, rounds=2, block=2)),
    # Chapter 7 must run in about 12 minutes on 2 cores, its sections 7.1-7.4 in 6: 600 two-stage iterations are
    # about 50 s of training per scheme (~80 ms each), and 2000 samples keep each Fréchet distance to ~2 s.
    "cpu": GanSchedule(iterations=600, eval_every=150, fd_samples=2000,
                       timing=TimingSchedule(warmup=3, rounds=24, block=1)),
    "paper": GanSchedule(width=64, iterations=50_000, eval_every=5000, fd_samples=10_000),
}


def gan_schedule(profile) -> GanSchedule:
    return schedule_for(GAN_SCHEDULES, profile, "GAN")


# --------------------------------------------------------------------------- set-up shared with nbgraft.dfad
def book_teacher(profile, data_root, output_root, device) -> tuple[BlockNet, dict, str]:
    """(the book's CIFAR-10 teacher of this profile, its metrics, its cache key)."""
    teacher, tm = get_teacher("cifar10", profile, data_root=data_root, output_root=output_root, device=device)
    return teacher, tm, teacher_entry("cifar10", profile, data_root=data_root, output_root=output_root).key


def game_entry(run, game: str, scheme: str, profile, seed: int, sched, teacher_key: str, *, data_root=None,
               output_root=None, device=None, **extra) -> tuple[Entry, float | None]:
    """The cache entry of one training run of a game (`run` is its runner, e.g. run_gan) and, for a one-stage
    run, its budget: the two-stage run's training seconds (onestage.wall_clock_budget), recorded in the key."""
    config = {"game": game, "scheme": scheme, "profile": profile.name, "seed": seed, "schedule": run_config(sched),
              "teacher": teacher_key, **extra}
    budget_s, budget_key = wall_clock_budget(run, scheme, profile, seed, data_root=data_root,
                                             output_root=output_root, device=device)
    return Entry(output_root, game, {**config, **budget_key}), budget_s


def real_pool(profile, data_root) -> tuple[torch.Tensor, np.ndarray, D.ImageData]:
    """CIFAR-10 train images outside the validation pool (uint8 NCHW) for the GAN, and the pool's indices."""
    data = D.load_dataset("cifar10", data_root)
    split = D.make_split(data, get_profile(profile).val_per_class["cifar10"])
    idx = split.teacher_train[: gan_schedule(profile).train_limit]
    return torch.from_numpy(np.ascontiguousarray(data.x_train[idx])).permute(0, 3, 1, 2).contiguous(), split.val, data


def build_gan(sched: GanSchedule, seed: int, device: torch.device) -> Players:
    torch.manual_seed(seed)
    gen, disc = Generator(sched.z_dim, sched.width).to(device), Discriminator(sched.width).to(device)
    betas = (sched.beta1, 0.999)
    return Players(GanGame(gen, disc, sched.loss), torch.optim.Adam(disc.parameters(), sched.lr, betas=betas),
                   torch.optim.Adam(gen.parameters(), sched.lr, betas=betas))


# --------------------------------------------------------------------------- the run
def run_gan(scheme: str, profile="cpu", seed: int = 0, *, data_root=None, output_root=None, device=None) -> dict:
    """DCGAN on CIFAR-10, two-stage for the profile's iterations, or one-stage for the two-stage run's
    training seconds (it records its state at the same iteration count on the way); cached.

    Quality: Fréchet distance of the teacher's penultimate features between generated images and the
    validation pool (held out of GAN training).
    """
    check_training_scheme(scheme)
    device = pick_device(device)
    profile = get_profile(profile)
    sched = gan_schedule(profile)
    teacher, tm, teacher_key = book_teacher(profile, data_root, output_root, device)
    entry, budget_s = game_entry(run_gan, "gan", scheme, profile, seed, sched, teacher_key, data_root=data_root,
                                 output_root=output_root, device=device)
    if entry.done:
        return entry.metrics()
    entry.start()
    real, val, data = real_pool(profile, data_root)
    n_fd = min(sched.fd_samples, len(val))
    val_feat = penultimate_features(teacher, D.to_tensor(data.x_train[val[:n_fd]], "cifar10", device))
    train_feat = penultimate_features(teacher, to_teacher_input(real[-n_fd:].to(device).float() / 127.5 - 1))
    m = build_gan(sched, seed, device)

    def evaluate() -> dict:
        fake = generate(m.game.gen, n_fd, seed + 2, device)
        return {"frechet": frechet_distance(penultimate_features(teacher, to_teacher_input(fake)), val_feat)}

    log = train_run(m, scheme, Noise(sched.z_dim, sched.batch_size, seed + 1, device, real), sched.iterations,
                    budget_s, sched.eval_every, evaluate, f"GAN {scheme}")
    entry.save_tensors("samples.pt", tanh_pixels_to_uint8(generate(m.game.gen, 64, seed + 3, device)))
    entry.save_tensors("generator.pt", m.game.gen.state_dict())
    return entry.finish({**entry.config, **log, "budget_s": budget_s, "frechet": log["checkpoints"][-1]["frechet"],
                         "frechet_real_vs_real": frechet_distance(train_feat, val_feat), "fd_samples": n_fd,
                         "teacher_test_accuracy": tm["test_accuracy"], "feature_dim": int(val_feat.shape[1]),
                         "device": str(device), "machine": machine(device), "torch_threads": torch.get_num_threads(),
                         "cache_key": entry.key})
