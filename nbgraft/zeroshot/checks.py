"""Chapter 7's two checks of one-stage training on the book's networks, over both games: are its gradients
the two-stage ones (`gradient_checks`), and how much time per iteration does it save (`time_schemes`).

Kept apart from nbgraft.onestage, which knows no game, so that nbgraft.gan and nbgraft.dfad import the
method and this module imports them, without a cycle.
"""

from __future__ import annotations

import copy

import torch

from ..cache import Entry
from ..device import machine, pick_device
from .dfad import DatafreeGame, book_student, build_datafree, datafree_schedule
from .gan import Discriminator, GanGame, Generator, book_teacher, build_gan, gan_schedule, real_pool
from .onestage import SCHEMES, Noise, gradient_gap, time_iterations
from ..profiles import get_profile

# (game, factor, loss, BatchNorm in D, D's passes, exact in theory): the cases the derivation tells apart.
GAN_CASES = [
    ("GAN, non-saturating loss", "-exp(-o)", "nonsaturating", False, "one batch", True),
    ("GAN, minimax loss", "-1", "minimax", False, "one batch", True),
    ("GAN, minimax loss, BatchNorm in D", "-1", "minimax", True, "one batch", False),
    ("GAN, minimax loss, BatchNorm in D", "-1", "minimax", True, "real, fake apart", True),
    ("GAN, non-saturating loss, BatchNorm in D", "-exp(-o)", "nonsaturating", True, "real, fake apart", False),
]


def gradient_checks(profile="cpu", seed: int = 0, *, batch_size: int = 16, data_root=None,
                    output_root=None) -> list[dict]:
    """`gradient_gap` of this profile's networks on one fixed batch of real CIFAR-10 images, in float64 on
    the CPU: the GAN cases of GAN_CASES, and data-free distillation with the book's teacher and student
    (own blocks' BatchNorm in train mode) and DFAD's normalising generator.
    """
    profile = get_profile(profile)
    gs, ds = gan_schedule(profile), datafree_schedule(profile)
    g = torch.Generator().manual_seed(seed)
    real = real_pool(profile, data_root)[0][:batch_size].double() / 127.5 - 1
    gan_batch = {"real": real, "z": torch.randn(batch_size, gs.z_dim, generator=g, dtype=torch.float64)}
    rows = []
    for name, factor, loss, bn, passes, exact in GAN_CASES:
        torch.manual_seed(seed)
        game = GanGame(Generator(gs.z_dim, gs.width).double(), Discriminator(gs.width, bn).double(), loss,
                       separate_passes=passes != "one batch")
        rows.append({"game": name, "factor": factor, "batch_norm": bn, "d_passes": passes,
                     "exact_in_theory": exact, **gradient_gap(game, gan_batch)})
    teacher = copy.deepcopy(book_teacher(profile, data_root, output_root, torch.device("cpu"))[0]).double()
    torch.manual_seed(seed)
    student, first = book_student(teacher)
    game = DatafreeGame(Generator(ds.z_dim, ds.width, normalise=True).double(), student.double(), teacher, first)
    z = torch.randn(batch_size, ds.z_dim, generator=g, dtype=torch.float64)
    rows.append({"game": "data-free distillation", "factor": "-1", "batch_norm": teacher.spec.batch_norm,
                 "d_passes": "one batch (student BatchNorm in train mode)", "exact_in_theory": True,
                 **gradient_gap(game, {"z": z})})
    return rows


def time_schemes(game: str, profile="cpu", seed: int = 0, *, schemes=SCHEMES, data_root=None, output_root=None,
                 device=None) -> dict:
    """Median seconds per iteration of each scheme, measured in one process, schemes interleaved; cached.

    Each scheme trains its own copy of the same initial networks on the same batches, after a warm-up. A
    data-free iteration is DFAD's: `student_steps` student updates and one generator update.
    """
    if game not in ("gan", "datafree"):
        raise ValueError(f"unknown game {game!r}; use 'gan' or 'datafree'")
    bad = [s for s in schemes if s not in SCHEMES]
    if bad:
        raise ValueError(f"unknown schemes {bad}; use some of {SCHEMES}")
    device = pick_device(device)
    profile = get_profile(profile)
    sched = gan_schedule(profile) if game == "gan" else datafree_schedule(profile)
    d_steps = getattr(sched, "student_steps", 1)
    teacher, teacher_key = None, None  # the GAN's timing does not involve the teacher
    if game == "datafree":
        teacher, _, teacher_key = book_teacher(profile, data_root, output_root, device)
    entry = Entry(output_root, "onestage_timing", {"game": game, "profile": profile.name, "schedule": sched,
                                                   "schemes": list(schemes), "seed": seed, "teacher": teacher_key,
                                                   "device": device.type})
    if entry.done:
        return entry.metrics()
    real = real_pool(profile, data_root)[0] if game == "gan" else None
    runs = {s: (build_gan(sched, seed, device) if game == "gan" else build_datafree(sched, teacher, seed, device),
                Noise(sched.z_dim, sched.batch_size, seed + 1, device, real)) for s in schemes}
    out = time_iterations(runs, sched.timing, device, d_steps)
    return entry.finish({"game": game, "profile": profile.name, **out, "batch_size": sched.batch_size,
                         "d_steps": d_steps, "device": str(device), "machine": machine(device),
                         "torch_threads": torch.get_num_threads()})
