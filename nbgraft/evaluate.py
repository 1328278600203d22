"""Reporting: test accuracy, agreement with the teacher, parameters, FLOPs and CPU latency.

The test set is only ever read here, for numbers that are reported, never for a choice.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .device import autocast, policy


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
    """Median wall time of one forward pass on the CPU, in milliseconds."""
    import copy

    m = copy.deepcopy(model).cpu().eval()
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
    of 128, and parameters and MACs relative to the first model (the teacher)."""
    import pandas as pd

    rows = [{"model": name, "params_M": count_params(m) / 1e6, "MMACs": count_flops(m) / 1e6,
             "cpu_latency_ms_batch1": cpu_latency_ms(m, batch_size=1),
             "cpu_latency_ms_batch128": cpu_latency_ms(m, batch_size=128, repeats=repeats_128)}
            for name, m in models.items()]
    out = pd.DataFrame(rows)
    out["relative_params"] = out["params_M"] / out["params_M"].iloc[0]
    out["relative_MMACs"] = out["MMACs"] / out["MMACs"].iloc[0]
    return out
