"""Benchmark: the CPU costs behind the book's time, per kernel and per training step.

From the repository root, on an otherwise idle machine:

    python benchmarks/bench_cpu.py            # about a minute
    python benchmarks/bench_cpu.py --steps 40

Three measurements, each printed as a table:

1. **Max-pooling**, forward and backward, at the cpu profile's VGG layer shapes: PyTorch's `nn.MaxPool2d`
   (its NCHW kernel) against `nbgraft.models.vgg.MaxPool` (the channels-last kernel; the same values and
   gradients, which the tests check).
2. **Setting a grafted network's mode**, called at every training step: `nn.Module.train` on the whole hybrid
   then `eval()` on its teacher (what `Grafted.train` did before) against `Grafted.train` now (the student
   part only), for the cpu VGG16 and the published ResNet-56's architecture (random weights).
3. **One teacher training step** (cpu profile VGG16, batch 128): with PyTorch's pooling (as before), as the
   book runs it, and with channels-last memory and/or bf16 autocast. The book runs float32 in the usual
   memory format; the last three change every number downstream and depend on the CPU (bf16 is fast
   only with AMX or AVX512-BF16), so they are measured levers, not defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NBGRAFT_QUIET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from nbgraft import grafting as G  # noqa: E402
from nbgraft.device import machine, pick_device  # noqa: E402
from nbgraft.grafting import new_parts  # noqa: E402
from nbgraft.models import build  # noqa: E402
from nbgraft.models import resnet as R  # noqa: E402
from nbgraft.models import vgg as V  # noqa: E402
from nbgraft.profiles import get_profile  # noqa: E402


def timed(fn, steps: int, repeats: int = 3) -> float:
    """Milliseconds per call: the fastest of `repeats` means over `steps` calls, after three untimed calls
    (the first calls allocate; a shared machine only ever adds time)."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps * 1e3)
    return best


def pooling(steps: int, batch: int) -> None:
    print(f"\nmax-pooling 2x2, forward + backward, batch {batch} (ms per call)")
    print(f"{'input':>18} {'nn.MaxPool2d':>13} {'vgg.MaxPool':>12} {'speed-up':>9}")
    gen = torch.Generator().manual_seed(0)
    for c, hw in ((16, 32), (32, 16), (64, 8), (128, 4), (128, 2)):
        x = torch.relu(torch.randn(batch, c, hw, hw, generator=gen))
        grad = torch.randn(batch, c, hw // 2, hw // 2, generator=gen)

        def step(pool):
            xi = x.clone().requires_grad_()
            pool(xi).backward(grad)

        ms = [timed(lambda p=p: step(p), steps) for p in (nn.MaxPool2d(2), V.MaxPool(2))]
        print(f"{str((batch, c, hw, hw)):>18} {ms[0]:13.2f} {ms[1]:12.2f} {ms[0] / ms[1]:8.2f}x")


def mode_switch(steps: int) -> None:
    print("\nsetting a grafted network to train mode, per call (microseconds)")
    print(f"{'teacher':>10} {'modules':>8} {'whole hybrid':>13} {'student part':>13} {'speed-up':>9}")
    prof = get_profile("cpu")
    for name, spec in (("vgg16", V.teacher_spec(10, prof.width, prof.batch_norm)), ("resnet56", R.teacher_spec())):
        teacher = build(spec).eval()
        parts = new_parts(teacher, V.student_spec(spec) if name == "vgg16" else R.student_spec(spec), seed=0)
        hybrids = [G.Grafted(teacher, parts, i, i) for i in parts.positions]

        def before():
            for g in hybrids:
                nn.Module.train(g, True)
                g.teacher.eval()

        def now():
            for g in hybrids:
                g.train(True)

        us = [timed(f, steps * 10) * 1e3 / len(hybrids) for f in (before, now)]
        print(f"{name:>10} {len(list(teacher.modules())):8d} {us[0]:13.0f} {us[1]:13.0f} {us[0] / us[1]:8.1f}x")


def teacher_step(steps: int, batch: int) -> None:
    print(f"\nteacher training step, cpu profile VGG16 on CIFAR-10, batch {batch} (ms per step)")
    prof = get_profile("cpu")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    bf16_ok = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    base = None
    for label, cl, bf16, torch_pool in (("float32, nn.MaxPool2d", False, False, True),
                                        ("float32 (the book)", False, False, False),
                                        ("float32, channels-last", True, False, False),
                                        ("bf16 autocast", False, True, False),
                                        ("bf16 autocast, channels-last", True, True, False)):
        torch.manual_seed(0)
        model = build(V.teacher_spec(10, prof.width, prof.batch_norm)).train()
        if torch_pool:
            for block in model.blocks:
                for k, m in enumerate(block):
                    if isinstance(m, V.MaxPool):
                        block[k] = nn.MaxPool2d(2)
        x = x0
        if cl:
            model, x = model.to(memory_format=torch.channels_last), x0.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        ms = timed(step, steps)
        base = base or ms
        note = "" if not bf16 or bf16_ok else "  (this CPU has no AMX/AVX512-BF16: emulated)"
        print(f"{label:>30} {ms:8.1f} {base / ms:6.2f}x{note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed calls per measurement")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    pick_device("cpu")  # one intra-op thread per core, as the book runs
    print(", ".join(f"{k} {v}" for k, v in machine("cpu").items()))
    pooling(args.steps, args.batch)
    mode_switch(args.steps)
    teacher_step(args.steps, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
