"""Reporting: test accuracy, agreement with the teacher, parameters, FLOPs and CPU latency; and a score that needs
no label, for choices made without a labelled pool.

The test set is only ever read here, for numbers that are reported, never for a choice.

Choosing without labels: a student is scored by how often it agrees with its teacher on images made from the N
shots that training never showed. The teacher is what the student distils, so its answers need no label, and a user
who has only the N images and the teacher can compute this score for every candidate recipe and keep the best. The
probes are CutMix blends (Yun et al., ICCV 2019) of two shots: a random box of one (randomly cropped and flipped)
pasted into another, the box covering a quarter to three quarters of the image. Training only ever sees whole
images, cropped and flipped, and their mixup blends (nbgraft.grafting.views), so a student that merely memorised its
few views gains nothing here; what the probes reward is matching the teacher away from them. `training_views`
draws the views training does see, for comparison (a score on them rewards fitting the shots).
`nbgraft.runs.selection` measures what choosing by this score costs against the labelled validation pool.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from . import data as D
from .device import autocast, policy
from .training import derive_seed, generator


def eval_batch(device: torch.device | str) -> int:
    """Images per scoring chunk (nbgraft.device.Policy.eval_chunk). On a CPU, 128 keeps more of a chunk's
    activations in the caches: 1.6-2.3x faster than 1,000 for the book's teachers (benchmarks/bench_eval.py),
    the same logits bit for bit (in eval mode no image's arithmetic depends on another's). Accelerators take
    larger chunks."""
    return policy(device).eval_chunk


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits of `model` (eval mode) for the normalised images `x`, computed on x's device."""
    batch_size = batch_size or eval_batch(x.device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with autocast(x.device):
            out.append(model(x[i : i + batch_size]).float())
    model.train(was_training)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() * 100


def report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_pred: torch.Tensor | None = None) -> dict:
    """Top-1 accuracy (%) and, given the teacher's predicted classes, agreement with them (%)."""
    pred = predict(model, x).argmax(1)
    out = {"accuracy": (pred == y).float().mean().item() * 100}
    if teacher_pred is not None:
        out["agreement"] = (pred == teacher_pred).float().mean().item() * 100
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_shape=(1, 3, 32, 32)) -> int:
    """Multiply-accumulates of convs and linear layers for one image (BN, ReLU and pooling left out)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.shape[1] * out.shape[2] * out.shape[3] * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    model(torch.zeros(input_shape, device=device))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, batch_size: int = 1, repeats: int = 30) -> float:
    """Median wall time of one forward pass on the CPU, in milliseconds, of the model as a deployment runs it: a copy
    with its BatchNorms folded into its convolutions (`nbgraft.models.fold_batchnorms`), as the BN-free students
    already are, so that no comparison credits a student with what folding gives anyone."""
    from .models import fold_batchnorms

    m = fold_batchnorms(model).cpu().eval()
    x = torch.randn(batch_size, 3, 32, 32)
    for _ in range(3):
        m(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1000


def compression_table(models: dict, repeats_128: int = 10):
    """One row per named model: parameters (M), MACs (M), median CPU latency (ms) for one image and a batch
    of 128 (each with its BatchNorms folded, `cpu_latency_ms`), and parameters and MACs relative to the first model
    (the teacher)."""
    import pandas as pd

    rows = [{"model": name, "params_M": count_params(m) / 1e6, "MMACs": count_flops(m) / 1e6,
             "cpu_latency_ms_batch1": cpu_latency_ms(m, batch_size=1),
             "cpu_latency_ms_batch128": cpu_latency_ms(m, batch_size=128, repeats=repeats_128)}
            for name, m in models.items()]
    out = pd.DataFrame(rows)
    out["relative_params"] = out["params_M"] / out["params_M"].iloc[0]
    out["relative_MMACs"] = out["MMACs"] / out["MMACs"].iloc[0]
    return out


# --------------------------------------------------------------------------- without labels
PROBES = 2048  # probe images per score: the agreement's standard error is then at most about 1.1 points
PROBE_SALT = 7_919  # the probes' random stream, apart from every training stream of the same seed
BOX_AREA = (0.25, 0.75)  # the pasted box's share of the image, drawn uniformly


def _pairs(x: torch.Tensor, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` (image, other image) pairs of the shots, each augmented as training augments (crop, flip)."""
    dev = gen.device
    i = torch.randint(len(x), (count,), generator=gen, device=dev).to(x.device)
    j = (i + torch.randint(1, max(2, len(x)), (count,), generator=gen, device=dev).to(x.device)) % len(x)
    return D.augment(x[i], gen), D.augment(x[j], gen)


def probe_images(x: torch.Tensor, count: int = PROBES, seed: int = 0) -> torch.Tensor:
    """`count` CutMix blends of the normalised shots `x` (N, C, H, W), the same for a given seed and device type."""
    if len(x) < 2:
        raise ValueError(f"label-free probes blend two different images; got {len(x)} (give at least two shots)")
    gen = generator(derive_seed(seed, PROBE_SALT), x.device)
    dev = gen.device
    a, b = _pairs(x, count, gen)
    _, _, h, w = x.shape
    area = BOX_AREA[0] + (BOX_AREA[1] - BOX_AREA[0]) * torch.rand(count, generator=gen, device=dev)
    aspect = torch.exp((torch.rand(count, generator=gen, device=dev) - 0.5) * 2 * 0.5)  # e^[-0.5, 0.5]
    bh = (h * (area * aspect).sqrt()).round().clamp(1, h).long()
    bw = (w * (area / aspect).sqrt()).round().clamp(1, w).long()
    top = (torch.rand(count, generator=gen, device=dev) * (h - bh + 1)).long()
    left = (torch.rand(count, generator=gen, device=dev) * (w - bw + 1)).long()
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    inside = (((rows[None] >= top[:, None]) & (rows[None] < (top + bh)[:, None]))[:, :, None]
              & ((cols[None] >= left[:, None]) & (cols[None] < (left + bw)[:, None]))[:, None, :])
    return torch.where(inside[:, None].to(x.device), b, a)


def training_views(x: torch.Tensor, count: int = PROBES, seed: int = 0) -> torch.Tensor:
    """`count` views of the kind the book's recipe trains on: a crop and flip of a shot blended with another
    by a uniform weight (mixup). Agreement on these measures fit, not what a held-out image would see."""
    gen = generator(derive_seed(seed, PROBE_SALT + 1), x.device)
    a, b = _pairs(x, count, gen)
    lam = torch.rand(count, generator=gen, device=gen.device).to(x.device).view(-1, 1, 1, 1)
    return lam * a + (1 - lam) * b


def teacher_agreement(student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                      teacher_pred: torch.Tensor | None = None) -> float:
    """Share (%) of `images` on which the student's top class is the teacher's (`teacher_pred` if already known)."""
    if teacher_pred is None:
        teacher_pred = predict(teacher, images).argmax(1)
    return (predict(student, images).argmax(1) == teacher_pred).float().mean().item() * 100


def label_free_score(student: nn.Module, teacher: nn.Module, x: torch.Tensor, seed: int = 0,
                     count: int = PROBES) -> float:
    """Agreement (%) of student and teacher on `count` CutMix probes of the shots `x`: higher is better, and it
    reads neither a label nor an image beyond the N shots."""
    return teacher_agreement(student, teacher, probe_images(x, count, seed))
