"""Benchmark: how fast the teachers score images at several chunk sizes, and whether the logits agree.

Every score in the book (test and validation accuracy, the teacher's activations at block boundaries)
runs a network in eval mode over thousands of images, in chunks of `nbgraft.evaluate.eval_batch`.
This prints, per teacher, the seconds per 10,000 images at each chunk size (median of `--repeats`)
and whether the logits equal those of 1,000-image chunks bit for bit.

    python benchmarks/bench_eval.py                     # the published ResNet-56 (needs no training)
    python benchmarks/bench_eval.py --teachers resnet56 vgg16   # vgg16: the cpu profile's, if cached
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NBGRAFT_QUIET", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teachers", nargs="+", default=["resnet56"])
    ap.add_argument("--chunks", type=int, nargs="+", default=[1000, 512, 256, 128, 64])
    ap.add_argument("--images", type=int, default=2000, help="test images scored per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    import torch

    from nbgraft import data as D
    from nbgraft.device import machine, pick_device
    from nbgraft.evaluate import eval_batch
    from nbgraft.runs.teacher import get_teacher, teacher_entry

    device = pick_device("auto")
    m = machine(device)
    print(f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {device}; "
          f"nbgraft scores in chunks of {eval_batch(device)} here")
    data = D.load_dataset("cifar10", args.data_root)
    ok = True
    for name in args.teachers:
        if name == "vgg16" and not teacher_entry("cifar10", args.profile, data_root=args.data_root).done:
            print(f"{name}: not in the cache (python -m nbgraft teacher), skipped")
            continue
        net, _ = get_teacher("cifar10", args.profile, teacher=name, data_root=args.data_root, device=device)
        x = D.to_tensor(data.x_test[: args.images], "cifar10", device, net.spec.mean, net.spec.std)
        times, logits = {}, {}
        with torch.no_grad():
            net(x[:128])  # warm-up
            for _ in range(args.repeats):
                for bs in args.chunks:
                    t0 = time.perf_counter()
                    logits[bs] = torch.cat([net(x[i: i + bs]) for i in range(0, len(x), bs)])
                    times.setdefault(bs, []).append((time.perf_counter() - t0) * 10_000 / len(x))
        ref = logits.get(1000, logits[args.chunks[0]])
        for bs in args.chunks:
            same = torch.equal(logits[bs], ref)
            ok &= same
            print(f"{name:9s} chunk {bs:5d}: {statistics.median(times[bs]):6.1f} s per 10,000 images, "
                  f"logits {'identical' if same else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
