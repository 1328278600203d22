"""Pick the accelerator once, the same way everywhere: cuda, then mps, then cpu."""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` may be None/"auto" (best available) or an explicit torch device string."""
    if requested not in (None, "", "auto"):
        try:
            dev = torch.device(requested)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {requested!r}; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but no CUDA GPU is visible; use device='auto' or 'cpu'")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {requested!r} asked for, but this machine has no MPS; use 'auto' or 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    _use_all_cores()
    return torch.device("cpu")


def _use_all_cores() -> None:
    """Small convolutions on CPU are fastest with one intra-op thread per core; an explicit
    OMP_NUM_THREADS (e.g. to share the machine with other jobs) wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fast and safe without a grad scaler); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def machine(device: torch.device | str) -> dict:
    """Where a run ran, stored next to its wall time: CPU model, torch build, threads, device (and GPU name)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.device(device)
    out = {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out
