"""Pick the accelerator once, the same way everywhere (cuda, then mps, then cpu), and decide in this one
place what differs between devices: precision, how seeds trained together run, scoring chunk sizes.

Every other module asks `policy(device)` (or `autocast(device)`) instead of testing `device.type`, so the
GPU runs the same functions as the CPU. Tests run the CUDA policy on the CPU with `emulate("cuda")`
(bf16 autocast on the CPU, the vmap stack, large chunks): a bug of the GPU path shows up without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace

import torch

PRECISIONS = ("fp32", "bf16")
_SUPPORTED = ("cpu", "cuda", "mps")


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """`requested` may be None/"auto" (best available) or an explicit torch device string."""
    if isinstance(requested, torch.device):
        requested = str(requested)
    if requested not in (None, "", "auto"):
        try:
            dev = torch.device(requested)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is None or dev.type not in _SUPPORTED:
            raise ValueError(f"unknown device {requested!r}; nbgraft runs on 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {requested!r} asked for, but no CUDA GPU is visible; use "
                                 "--device auto or cpu")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(f"device {requested!r} asked for, but this machine has "
                                 f"{torch.cuda.device_count()} CUDA GPU(s): use cuda:0 .. "
                                 f"cuda:{torch.cuda.device_count() - 1}")
            _tune_cuda()
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {requested!r} asked for, but this machine has no MPS; use 'auto' or 'cpu'")
        if dev.type == "cpu":  # a CPU has no index: cpu:0 is the CPU, and saved tensors are tagged plain 'cpu'
            _use_all_cores()
            return torch.device("cpu")
        return dev
    if torch.cuda.is_available():
        _tune_cuda()
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


def _tune_cuda() -> None:
    """fp32 storage with TF32 tensor-core math for matrix products and convolutions, and cuDNN's autotuner
    (the book's shapes repeat for thousands of steps)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


# --------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class Policy:
    """How the book's code runs on one kind of device.

    precision: "fp32" (on CUDA with TF32 math) or "bf16" (autocast; no grad scaler needed). The vmap stack
        always computes in fp32: autocast does not reach inside `vmap`, so it runs its inputs in fp32.
    stack: how seeds trained together run (nbgraft.grafting.stacks): "loop" where convolutions are compute-bound
        (a CPU), "vmap" where many small kernels are the cost (a GPU).
    eval_chunk: images per scoring chunk (128 keeps a CPU's caches warm; accelerators take large chunks).
    channels_last: train the teacher in NHWC layout (cuDNN's fast convolutions); its inputs too.
    """

    kind: str
    precision: str = "fp32"
    stack: str = "loop"
    eval_chunk: int = 128
    channels_last: bool = False

    def record(self) -> dict:
        """What a run's machine record says of it."""
        return {"precision": self.precision, "stack": self.stack, "eval_chunk": self.eval_chunk,
                **({"emulating": self.kind} if _EMULATING else {})}


# The defaults. CUDA: fp32 + TF32, because bf16 autocast was measured slower for the paper VGG16's training
# step on an H200 (19.4k vs 21.8k images/s, issue 26), and grafting's small batches are launch-bound, where
# autocast only adds cast kernels. NBGRAFT_PRECISION=bf16 switches autocast on (benchmarks/gpu_check.py
# measures both).
DEFAULTS = {
    "cpu": Policy("cpu", "fp32", "loop", 128, channels_last=False),
    "cuda": Policy("cuda", "fp32", "vmap", 2048, channels_last=True),
    "mps": Policy("mps", "fp32", "vmap", 1000, channels_last=False),
}

_EMULATING: Policy | None = None


def policy(device: torch.device | str) -> Policy:
    """The policy for `device` (under `emulate`, the emulated device's policy runs on the CPU)."""
    kind = torch.device(device).type
    if _EMULATING is not None and kind == "cpu":
        return _EMULATING
    base = DEFAULTS.get(kind, DEFAULTS["cpu"])
    env = os.environ.get("NBGRAFT_PRECISION")
    if env and kind != "cpu":  # the CPU book's numbers are fp32's
        if env not in PRECISIONS:
            raise ValueError(f"NBGRAFT_PRECISION={env!r}; use one of {', '.join(PRECISIONS)}")
        base = replace(base, precision=env)
    return base


@contextlib.contextmanager
def emulate(kind: str = "cuda", **changes):
    """Run the CPU with another device's policy (e.g. `emulate("cuda", precision="bf16")`): the test suite
    runs the GPU's code paths this way, bf16 autocast included, on machines without a GPU."""
    global _EMULATING
    if kind not in DEFAULTS:
        raise ValueError(f"no policy for {kind!r}; use one of {', '.join(DEFAULTS)}")
    old, _EMULATING = _EMULATING, replace(DEFAULTS[kind], **changes)
    try:
        yield _EMULATING
    finally:
        _EMULATING = old


def autocast(device: torch.device | str):
    """bf16 autocast where the policy says bf16 (on the device's own type, so on the CPU when emulating);
    a no-op elsewhere."""
    device = torch.device(device)
    if policy(device).precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_autocast(device: torch.device | str):
    """Switch autocast off for a region that must compute in fp32 (e.g. inside vmap, which autocast does
    not reach consistently)."""
    kind = torch.device(device).type
    return torch.autocast(kind, enabled=False) if kind in ("cuda", "cpu") else contextlib.nullcontext()


def accumulator(device: torch.device | str, *shape: int) -> torch.Tensor:
    """Zeros to sum losses into on the device (read once per epoch, not per step: no host sync inside a
    training loop). float64 where the device has it (MPS has not)."""
    device = torch.device(device)
    return torch.zeros(shape, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)


def machine(device: torch.device | str) -> dict:
    """Where a run ran, stored next to its wall time: CPU model, torch build, threads, device (and GPU name),
    and how the device ran it (precision, seed stack, scoring chunk)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.device(device)
    out = {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev),
           **policy(dev).record()}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out
