"""Benchmark: a small sweep through a local Ray instance against the local executor, same runs, same results.

From the repository root (needs the cluster extra, `pip install -e .[cluster]`):

    python benchmarks/bench_ray.py                 # tiny profile, 8 NetGraft runs, 2 Ray CPUs
    python benchmarks/bench_ray.py --cpus 4 --seeds 0 1 2 3

Both executors run every run alone (no batched seeds) on one CPU thread, each into its own empty
output folder that holds only a copy of the teacher (trained first, not timed), so nothing is read
back from a cache. The Ray time includes starting the local Ray instance. Prints both wall times,
the speed-up and whether the two tables agree on every result column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NBGRAFT_QUIET", "1")

SAME = ["teacher", "dataset", "shots", "seed", "method", "cache_key", "test_accuracy", "test_agreement",
        "val_accuracy"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--cpus", type=int, default=2, help="CPU slots of the local Ray instance")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    import ray
    import torch

    from nbgraft import sweep as S
    from nbgraft.cluster import run_sweep_ray
    from nbgraft.device import machine
    from nbgraft.teacher import get_teacher

    grid = {"datasets": args.dataset, "shots": args.shots, "seeds": args.seeds, "methods": ["netgraft"]}
    kw = {"data_root": args.data_root, "device": "cpu", "batch_seeds": False}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        get_teacher(args.dataset, args.profile, data_root=args.data_root, output_root=tmp / "teacher", device="cpu")
        roots = {}
        for name in ("local", "ray"):
            roots[name] = tmp / name
            shutil.copytree(tmp / "teacher" / "cache" / "teacher", roots[name] / "cache" / "teacher")

        t0 = time.perf_counter()
        local = S.run_sweep(grid, args.profile, output_root=roots["local"], **kw)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        t_start = time.perf_counter() - t0
        try:
            dist = run_sweep_ray(grid, args.profile, output_root=roots["ray"], **kw)
        finally:
            ray.shutdown()
        t_ray = time.perf_counter() - t0
    same = local[SAME].equals(dist[SAME])
    m = machine("cpu")
    print(f"machine: {m['cpu']}, {os.cpu_count()} cores, torch {m['torch']}")
    print(f"{len(local)} runs ({args.profile} profile, {args.dataset}, N={args.shots}, seeds={args.seeds}), "
          "one thread per run")
    print(f"local executor, one after another : {t_local:7.1f} s")
    print(f"ray, {args.cpus} CPU slots            : {t_ray:7.1f} s (of which {t_start:.1f} s starting Ray)")
    print(f"speed-up                          : {t_local / t_ray:7.2f}x")
    print(f"identical results                 : {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
