"""Benchmark: a small sweep through a local Ray instance against the local executor, same runs, same results.

From the repository root (needs the cluster extra, `pip install -e .[cluster]`):

    python benchmarks/bench_ray.py                 # tiny profile, 8 NetGraft runs, 2 Ray CPUs
    python benchmarks/bench_ray.py --profile cpu --shots 1 --seeds 0 1 2 3   # 4 real runs (~8 min)
    python benchmarks/bench_ray.py --warm          # as a cluster that has run before: workers warmed first
    python benchmarks/bench_ray.py --cpus 4 --seeds 0 1 2 3

Both executors run every run alone (no batched seeds) on one CPU thread, each into its own empty
output folder that holds only a copy of the teacher (read from the output root's cache, or trained
there first; not timed), so nothing is read back from a cache. Ray is timed twice over: from starting
the local instance, and from submitting the first task to a running instance (a cluster started once
with `ray start`). Prints the wall times, the speed-ups and whether the tables agree on every result
column. A tiny-profile run lasts about a second, less than a fresh Ray worker takes to import torch and
build the teacher's test tensors, so without `--warm` its speed-up measures process start-up; `--warm`
first gives every process (the local one and each Ray worker) one `prepare` of the teacher, untimed, as
a cluster that has run a sweep before has done. The cpu profile's runs measure the executor either way.
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

def _warm(profile: str, dataset: str, data_root, output_root) -> int:
    """Import torch and nbgraft and build the teacher's per-process tensors here (untimed); the process id."""
    import torch

    from nbgraft.runs.experiments import prepare

    torch.set_num_threads(1)
    prepare(dataset, 1, 0, profile, data_root=data_root, output_root=output_root, device="cpu")
    time.sleep(1.0)  # hold this slot a moment, so that every Ray worker gets one warm-up
    return os.getpid()


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
    ap.add_argument("--warm", action="store_true", help="warm every process (local and Ray workers) before timing")
    args = ap.parse_args()

    import ray
    import torch

    from nbgraft.runs import sweep as S
    from nbgraft.runs.cluster import run_sweep_ray
    from nbgraft.device import machine
    from nbgraft.runs.teacher import get_teacher, teacher_entry

    grid = {"datasets": args.dataset, "shots": args.shots, "seeds": args.seeds, "methods": ["netgraft"]}
    kw = {"data_root": args.data_root, "device": "cpu", "batch_seeds": False}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        get_teacher(args.dataset, args.profile, data_root=args.data_root, device="cpu")  # the output root's cache
        entry = teacher_entry(args.dataset, args.profile, data_root=args.data_root)
        roots = {}
        for name in ("local", "ray"):
            roots[name] = tmp / name
            shutil.copytree(entry.dir, roots[name] / "cache" / "teacher" / entry.key)

        if args.warm:
            _warm(args.profile, args.dataset, args.data_root, roots["local"])
        t0 = time.perf_counter()
        local = S.run_sweep(grid, args.profile, output_root=roots["local"], **kw)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        t_start = time.perf_counter() - t0
        try:
            if args.warm:
                warm = ray.remote(num_cpus=1)(_warm)
                pids = ray.get([warm.remote(args.profile, args.dataset, args.data_root, roots["ray"])
                                for _ in range(args.cpus)])
                print(f"warmed {len(set(pids))} Ray worker(s)")
            t1 = time.perf_counter()
            dist = run_sweep_ray(grid, args.profile, output_root=roots["ray"], **kw)
            t_tasks = time.perf_counter() - t1
        finally:
            ray.shutdown()
        t_ray = t_start + t_tasks
    same = local[SAME].equals(dist[SAME])
    m = machine("cpu")
    print(f"machine: {m['cpu']}, {os.cpu_count()} cores, torch {m['torch']}")
    print(f"{len(local)} runs ({args.profile} profile, {args.dataset}, N={args.shots}, seeds={args.seeds}), "
          "one thread per run" + (", every process warmed first" if args.warm else ""))
    print(f"local executor, one after another : {t_local:7.1f} s")
    if not args.warm:  # warmed workers took untimed time of their own: no start-to-end figure then
        print(f"ray, {args.cpus} CPU slots            : {t_ray:7.1f} s (of which {t_start:.1f} s starting Ray)")
        print(f"speed-up, Ray started here        : {t_local / t_ray:7.2f}x")
    print(f"speed-up, Ray already running     : {t_local / t_tasks:7.2f}x ({t_tasks:.1f} s from the first task)")
    print(f"identical results                 : {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
