"""Benchmark: nbgraft's grafting engine against a loop with the official structure, and seeds batched vs one by one.

From the repository root:

    python benchmarks/bench_graft.py            # 10-shot CIFAR-10, cpu profile, seeds 0 1 2 (needs the cpu teacher)
    python benchmarks/bench_graft.py --quick    # the tiny profile: a smoke run of seconds

Every measurement runs in a fresh Python process (so its peak memory is its own) with its own empty
output folder holding only a copy of the cached teacher: nothing is read from the project's
experiment cache but the teacher, and nothing is written into it. Wall times are end to end (teacher,
tensors and validation pool loaded, training, every evaluation the run does), except reading the
arrays from disk, done before the clock starts in every part.

Rows: (a) the reference loop of benchmarks/reference_loop.py; with --ref-test-every k > 1 it scores
the test set only every k-th epoch, and the time of the skipped passes is added back from the
measured mean pass time, printed separately as an extrapolation; (b) nbgraft.runs.experiments.run_netgraft;
then S single run_netgraft runs against one nbgraft.runs.experiments.graft_seeds call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF_TEST_BUDGET_S = 10 * 60  # with --ref-test-every auto: at most about this much measured test-pass time


# --------------------------------------------------------------------------- parts (each in its own process)
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler(threading.Thread):
    """Samples the resident set every 10 ms: the peak a part adds on top of the process it started in."""

    def __init__(self):
        super().__init__(daemon=True)
        self.start_mb = self.peak_mb = _rss_mb()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, _rss_mb())


def _peak_memory(sampler: _RssSampler) -> dict:
    import torch

    sampler.stop.set()
    sampler.join()
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "added_rss_mb": max(sampler.peak_mb, _rss_mb()) - sampler.start_mb}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _n_test(args) -> int:
    from nbgraft import data as D
    from nbgraft.profiles import get_profile

    data = D.load_dataset(args.dataset, args.data_root)
    return len(D.test_arrays(data, get_profile(args.profile).test_limit)[0])


def _count_test_passes(n_test: int) -> dict:
    """Count forward passes over the whole test set made through nbgraft.evaluate.predict."""
    import nbgraft.evaluate as E
    import nbgraft.runs.experiments as X

    counter = {"full": 0, "suffix": 0}
    orig = E.predict

    def counted(model, x, *a, **k):
        counter["full"] += len(x) == n_test
        return orig(model, x, *a, **k)

    E.predict = X.predict = counted
    return counter


def _overrides(args) -> dict:
    """GraftSchedule overrides for --fraction: every stage's epochs scaled (at least 1 each)."""
    if args.fraction == 1.0:
        return {}
    from nbgraft.profiles import get_profile

    sched = get_profile(args.profile).graft_for(args.dataset, method=args.method)
    return {k: tuple(max(1, round(e * args.fraction)) for e in getattr(sched, k)) for k in ("block_epochs", "net_epochs")}


def _schedule(args):
    from dataclasses import replace

    from nbgraft.profiles import get_profile

    return replace(get_profile(args.profile).graft_for(args.dataset, method=args.method), **_overrides(args))


def part_reference(args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from reference_loop import reference_netgraft

    from nbgraft.evaluate import predict
    from nbgraft.grafting import new_parts
    from nbgraft.runs.experiments import prepare, student_spec_for
    from nbgraft.profiles import get_profile

    profile = get_profile(args.profile)
    sched = _schedule(args)
    seed = args.seeds[0]
    _n_test(args)  # reads the arrays from disk, untimed, as in the other parts
    total_epochs = sum(sched.block_epochs) + sum(sched.net_epochs)
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    s = prepare(args.dataset, args.shots, seed, profile, data_root=args.data_root, output_root=args.root,
                device=args.device)
    setup_s = time.perf_counter() - t0
    test_every, probe_s = args.ref_test_every, None
    if test_every == "auto":  # one teacher pass over the test set, timed outside the measured run
        p0 = time.perf_counter()
        predict(s.teacher, s.x_test)
        probe_s = time.perf_counter() - p0
        test_every = max(1, math.ceil(total_epochs * probe_s / REF_TEST_BUDGET_S))
    test_every = int(test_every)
    t1 = time.perf_counter()
    parts = new_parts(s.teacher, student_spec_for(s.teacher.spec), seed, sched.init, s.x)  # as run_netgraft
    log = reference_netgraft(s.teacher, parts, s.x, sched, args.shots, seed, s.x_test, s.y_test, test_every)
    wall = setup_s + time.perf_counter() - t1
    skipped = log.epochs - log.test_passes
    return {"wall_s": wall, "setup_s": setup_s, "test_s": log.test_s, "test_passes": log.test_passes,
            "epochs": log.epochs, "test_every": test_every, "probe_teacher_test_pass_s": probe_s,
            "skipped_test_passes": skipped, "extrapolated_wall_s": wall + skipped * log.seconds_per_test_pass,
            "test_accuracy": log.final_accuracy, "images": len(s.x), **_peak_memory(sampler)}


def part_engine(args) -> dict:
    from nbgraft.runs.experiments import run_netgraft

    counter = _count_test_passes(_n_test(args))
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    m = run_netgraft(args.dataset, args.shots, args.seeds[0], args.profile, method=args.method,
                     data_root=args.data_root, output_root=args.root, device=args.device, **_overrides(args))
    return {"wall_s": time.perf_counter() - t0, "test_passes": counter["full"], "test_accuracy": m["test_accuracy"],
            "block_stage_s": m["block_stage_s"], "net_stage_s": m["net_stage_s"], "images": m["images"],
            **_peak_memory(sampler)}


def part_singles(args) -> dict:
    from nbgraft.runs.experiments import run_netgraft

    counter = _count_test_passes(_n_test(args))
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    ms = [run_netgraft(args.dataset, args.shots, seed, args.profile, method=args.method, data_root=args.data_root,
                       output_root=args.root, device=args.device, **_overrides(args)) for seed in args.seeds]
    return {"wall_s": time.perf_counter() - t0, "test_passes": counter["full"],
            "test_accuracy": [m["test_accuracy"] for m in ms], "images": ms[0]["images"], **_peak_memory(sampler)}


def part_batched(args) -> dict:
    import nbgraft.grafting as B
    from nbgraft.runs.experiments import graft_seeds

    n_test = _n_test(args)
    counter = {"full": 0, "suffix": 0}
    init, hybrid, student = B.SharedBoundaries.__init__, B.SharedBoundaries.hybrid_logits, B.SharedBoundaries.student_logits

    def count(self, key):
        counter[key] += len(self.acts[self.first]) == n_test

    def init_c(self, teacher, x, first):
        init(self, teacher, x, first)
        count(self, "full")

    B.SharedBoundaries.__init__ = init_c
    B.SharedBoundaries.hybrid_logits = lambda self, *a: (count(self, "suffix"), hybrid(self, *a))[1]
    B.SharedBoundaries.student_logits = lambda self, *a: (count(self, "suffix"), student(self, *a))[1]
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    ms = graft_seeds(args.dataset, args.shots, args.seeds, args.profile, method=args.method, data_root=args.data_root,
                     output_root=args.root, device=args.device, stack=args.stack, **_overrides(args))
    return {"wall_s": time.perf_counter() - t0, "test_passes": counter["full"], "suffix_passes": counter["suffix"],
            "stack": args.stack,
            "test_accuracy": [m["test_accuracy"] for m in ms], "images": ms[0]["images"], **_peak_memory(sampler)}


PARTS = {"reference": part_reference, "engine": part_engine, "singles": part_singles, "batched": part_batched}


# --------------------------------------------------------------------------- driver
def _teacher_dir(args, root) -> Path:
    from nbgraft.cache import Entry
    from nbgraft.runs.teacher import teacher_config

    return Entry(root, "teacher", teacher_config(args.dataset, args.profile, data_root=args.data_root)).dir


def _stage_teacher(args, work: Path) -> Path:
    """A folder holding only the teacher entry, copied from --teacher-root (or trained there for tiny)."""
    src = _teacher_dir(args, args.teacher_root)
    if not (src / "metrics.json").is_file():
        if args.profile != "tiny":
            sys.exit(f"no finished {args.profile} teacher for {args.dataset} under {args.teacher_root}: train it first "
                     f"(python -m nbgraft teacher --dataset {args.dataset} --profile {args.profile}) or point "
                     "--teacher-root at the outputs folder that holds it")
        from nbgraft.runs.teacher import get_teacher

        get_teacher(args.dataset, args.profile, data_root=args.data_root, output_root=work / "teacher",
                    device=args.device)
        src = _teacher_dir(args, work / "teacher")
    return src


def _run_part(name: str, args, work: Path, teacher_src: Path) -> dict:
    root = work / name
    shutil.copytree(teacher_src, _teacher_dir(args, root))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--root", str(root),
           "--dataset", args.dataset, "--shots", str(args.shots), "--profile", args.profile,
           "--seeds", *map(str, args.seeds), "--device", args.device, "--ref-test-every", str(args.ref_test_every),
           "--fraction", str(args.fraction), "--stack", args.stack, "--method", args.method]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    print(f"[{time.strftime('%H:%M:%S')}] running {name} ...", flush=True)
    env = {**os.environ, "NBGRAFT_QUIET": os.environ.get("NBGRAFT_QUIET", "1")}
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"part {name} failed (exit {out.returncode}):\n{out.stdout[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _train_images(args, per_seed_images: int) -> int:
    """Images a run trains on: few-shot set size x every epoch of both stages (the same for all loops)."""
    sched = _schedule(args)
    return per_seed_images * (sum(sched.block_epochs) + sum(sched.net_epochs))


def _table(rows: list[list]) -> str:
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     for r in rows)


def _mem(r: dict) -> str:
    cuda = f", CUDA {r['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in r else ""
    return f"{r['peak_rss_mb']:.0f} (+{r['added_rss_mb']:.0f}){cuda}"


def report(args, res: dict) -> str:
    lines = []
    head = ["run", "wall s", "train img/s", "test passes", "peak RSS MB (+run)", "test acc %"]
    if "reference" in res:
        r, e = res["reference"], res["engine"]
        imgs = _train_images(args, e["images"])
        rows = [head,
                [f"reference, measured (test every {r['test_every']} ep.)", f"{r['wall_s']:.1f}",
                 f"{imgs / r['wall_s']:.0f}", r["test_passes"], _mem(r), f"{r['test_accuracy']:.2f}"]]
        if r["skipped_test_passes"]:
            rows.append([f"reference, extrapolated (+{r['skipped_test_passes']} passes x "
                         f"{r['test_s'] / r['test_passes']:.2f} s)", f"{r['extrapolated_wall_s']:.1f}",
                         f"{imgs / r['extrapolated_wall_s']:.0f}", r["epochs"], "", ""])
        rows.append(["nbgraft engine (run_netgraft)", f"{e['wall_s']:.1f}", f"{imgs / e['wall_s']:.0f}",
                     e["test_passes"], _mem(e), f"{e['test_accuracy']:.2f}"])
        lines += [_table(rows), ""]
        full = r["extrapolated_wall_s"]
        lines.append(f"speed-up, engine vs reference structure: {full / e['wall_s']:.1f}x"
                     + (f" (extrapolated; measured part alone: {r['wall_s'] / e['wall_s']:.1f}x)"
                        if r["skipped_test_passes"] else " (measured)"))
        lines.append(f"final test accuracy, engine - reference: {e['test_accuracy'] - r['test_accuracy']:+.2f} points")
        lines.append("")
    if "singles" in res:
        si, ba = res["singles"], res["batched"]
        S = len(args.seeds)
        imgs = S * _train_images(args, si["images"])
        rows = [head,
                [f"{S} single runs, one after another", f"{si['wall_s']:.1f}", f"{imgs / si['wall_s']:.0f}",
                 si["test_passes"], _mem(si), " / ".join(f"{a:.2f}" for a in si["test_accuracy"])],
                [f"{S} seeds batched (graft_seeds, {ba['stack']})", f"{ba['wall_s']:.1f}", f"{imgs / ba['wall_s']:.0f}",
                 f"{ba['test_passes']} + {ba['suffix_passes']} suffix", _mem(ba),
                 " / ".join(f"{a:.2f}" for a in ba["test_accuracy"])]]
        lines += [_table(rows), ""]
        diffs = [b - a for a, b in zip(si["test_accuracy"], ba["test_accuracy"])]
        lines.append(f"speed-up, {S} seeds batched vs {S} single runs: {si['wall_s'] / ba['wall_s']:.2f}x")
        lines.append("per-seed test accuracy, batched - single: " + ", ".join(f"{d:+.2f}" for d in diffs))
        lines.append("('suffix' passes run the students from the teacher's boundary activations, computed once)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--method", default="netgraft_paper", choices=("netgraft_paper", "netgraft"),
                    help="the recipe; the reference loop reproduces the paper's (logit loss, fresh augmentations)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the first one is used for (a)/(b)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--teacher-root", default=None, help="outputs folder holding the cached teacher (default: ./outputs)")
    ap.add_argument("--ref-test-every", default="auto",
                    help="score the reference on the test set every k-th epoch and extrapolate the rest; "
                         f"'auto' picks k so measured test passes take about {REF_TEST_BUDGET_S // 60} min")
    ap.add_argument("--stack", default="auto", choices=("auto", "loop", "vmap"),
                    help="how graft_seeds runs the students (auto: loop on CPU, vmap on GPU)")
    ap.add_argument("--only", choices=("engine", "seeds"), help="run only (a)/(b) or only the seed comparison")
    ap.add_argument("--quick", action="store_true", help="tiny profile, 2-shot: a smoke run of seconds")
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="scale every stage's epochs by this (>= 1 epoch each), to estimate a long run's time. "
                         "Evaluation does not shrink with it, so speed-ups measured at a fraction are not the "
                         "targets' (stated for 1.0, the profile's own schedule)")
    ap.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ref_test_every != "auto" and (not args.ref_test_every.isdigit() or int(args.ref_test_every) < 1):
        ap.error("--ref-test-every must be 'auto' or a whole number >= 1")
    if args.part:
        print("RESULT " + json.dumps(PARTS[args.part](args)), flush=True)
        return 0
    if args.quick:
        args.profile, args.shots = "tiny", min(args.shots, 2)
    if not 0 < args.fraction <= 1:
        ap.error("--fraction must be in (0, 1]")
    if len(set(args.seeds)) != len(args.seeds):
        ap.error("--seeds must be distinct")
    import torch

    from nbgraft.device import pick_device

    device = pick_device(args.device)
    frac = f" x{args.fraction:g} epochs" if args.fraction != 1.0 else ""
    print(f"nbgraft benchmark: {args.dataset}, N={args.shots}, profile {args.profile}{frac}, seeds {args.seeds}; "
          f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    res = {}
    with tempfile.TemporaryDirectory(prefix="nbgraft_bench_") as tmp:
        work = Path(tmp)
        teacher = _stage_teacher(args, work)
        names = {None: PARTS, "engine": ("reference", "engine"), "seeds": ("singles", "batched")}[args.only]
        for name in names:
            res[name] = _run_part(name, args, work, teacher)
    text = report(args, res)
    print("\n" + text)
    if args.json:
        from nbgraft.cache import atomic_write_json

        atomic_write_json(Path(args.json), {"args": vars(args), "device": str(device), "results": res,
                                            "report": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
