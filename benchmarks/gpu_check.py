"""The book on one GPU, checked and timed in one command (issue 26's targets).

On a GPU machine, from the repository root, with the reduced CIFAR pack of `../shared/device/` unpacked
into `data/` and the ResNet-56 weights where NBGRAFT_TEACHERS points (see the README, "The book on a GPU"):

    python benchmarks/gpu_check.py --json $OUT/gpu_check.json     # about 5 minutes on one H200

and, anywhere, a CPU rehearsal of the same code (the tiny profile, CUDA's policy emulated on the CPU with
bf16 autocast; seconds, numbers meaningless; the test suite runs it so the check cannot rot):

    python benchmarks/gpu_check.py --dry-run

It prints, in order:
1. every code path a chapter runs (teacher training, both seed stacks through both recipes, the four
   baselines, inversion and NetGraft on its images, DFAD, the GAN, scoring), run on the device under its
   default precision and under bf16 autocast (a dry run: bf16 alone), each checked for finite losses and scores in range; then the
   CPU-emulated GPU tests (`tests/test_gpu_path.py`) where pytest is installed;
2. chapter 8 executed through papermill into an empty output root;
3. CIFAR-10 VGG16 NetGraft at N=10 over 3 seeds (trained together), with a cpu-profile teacher trained here,
   and the GPU's mean utilisation while grafting (nvidia-smi sampled every 0.5 s);
4. the paper VGG16's training loop (`nbgraft.teacher.train_epoch`, 60 s) against the raw training step
   (the same model, optimiser and batch without the loop), in fp32 and in bf16;
5. the GAN's one-stage / two-stage time per iteration;
and a table of the targets, measured against their goals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NBGRAFT_QUIET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nbgraft import data as D  # noqa: E402
from nbgraft import device as DEV  # noqa: E402
from nbgraft.methods import BASELINE_METHODS, GRAFT_METHODS  # noqa: E402
from nbgraft.profiles import get_profile  # noqa: E402

TARGETS = {  # name: (goal, "<=" or ">=")
    "chapter 8 fresh (s)": (30.0, "<="),
    "mean GPU utilisation while grafting (%)": (50.0, ">="),
    "teacher loop / raw step rate": (0.80, ">="),
    "GAN one-stage / two-stage time per iteration": (0.67, "<="),
}


class GpuSampler:
    """Mean GPU utilisation over a block of code, from `nvidia-smi` sampled every `interval_ms`."""

    def __init__(self, interval_ms: int = 500):
        self.interval_ms, self.proc, self.samples = interval_ms, None, []

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.samples = [float(v) for line in out.splitlines() for v in line.split(",")[:1] if v.strip().isdigit()]

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


@contextlib.contextmanager
def precision(name: str, dry_run: bool):
    """The device's default precision, or bf16 autocast: on a GPU by NBGRAFT_PRECISION, in a dry run by
    emulating CUDA's policy on the CPU."""
    if dry_run:
        with DEV.emulate("cuda", **({"precision": name} if name != "default" else {})):
            yield
        return
    old = os.environ.get("NBGRAFT_PRECISION")
    if name != "default":
        os.environ["NBGRAFT_PRECISION"] = name
    try:
        yield
    finally:
        os.environ.pop("NBGRAFT_PRECISION", None)
        if old is not None:
            os.environ["NBGRAFT_PRECISION"] = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_root(base: Path, name: str, teacher_from: Path | None = None) -> Path:
    """An empty output root (holding only `teacher_from`'s teachers, if given)."""
    root = base / name
    if teacher_from is not None:
        shutil.copytree(teacher_from / "cache" / "teacher", root / "cache" / "teacher")
    root.mkdir(parents=True, exist_ok=True)
    return root


def finite(values) -> bool:
    values = list(values)
    return bool(values) and all(math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- 1. every path
def check_paths(device: str, work: Path, data_root: Path, dry_run: bool) -> list[dict]:
    """Each path a chapter runs, on the device, in the tiny profile (numbers meaningless, the code is real)."""
    from nbgraft.zeroshot import dfad as DF
    from nbgraft.zeroshot import gan as G
    from nbgraft.zeroshot import inversion as I
    from nbgraft.evaluate import predict
    from nbgraft.runs.experiments import graft_seeds, run_student
    from nbgraft.runs.teacher import get_teacher

    rows = []
    for prec in (("bf16",) if dry_run else ("default", "bf16")):  # a dry run: the stricter one (the tests run both)
        root = fresh_root(work, f"paths-{prec}")
        kw = {"data_root": data_root, "output_root": root, "device": device}

        def graft(method, stack, **more):
            runs = graft_seeds("cifar10", 2, [0, 1], "tiny", method=method, stack=stack,
                               output_root=fresh_root(work, f"graft-{prec}-{method}-{stack}", root),
                               data_root=data_root, device=device, **more)
            return all(finite(v for st in ("block_losses", "net_losses") for vs in m[st].values() for v in vs)
                       and 0 <= m["test_accuracy"] <= 100 for m in runs), runs[0]["machine"]

        def teacher():
            net, m = get_teacher("cifar10", "tiny", **kw)
            out = predict(net, torch.zeros(4, 3, 32, 32, device=next(net.parameters()).device))
            return finite(h["train_loss"] for h in m["history"]) and out.dtype == torch.float32, m["machine"]

        def baseline(kind):
            m = run_student(kind, "cifar10", 2, 0, "tiny", **kw)
            return finite(m["loss_curve"]) and 0 <= m["test_accuracy"] <= 100, m["machine"]

        def inversion():
            pool = I.synthetic_pool("cifar10", 0, "tiny", **kw)
            m = graft_seeds("cifar10", 1, [0], "tiny", source="synthetic", **kw)[0]
            return finite(pool["metrics"]["losses"]["loss"]) and 0 <= m["test_accuracy"] <= 100, m["machine"]

        def game(run):
            m = run("one_stage", "tiny", **kw)
            return finite(v for k in ("d_loss", "g_loss") for v in m["losses"][k]), m["machine"]

        paths = {"teacher training": teacher,
                 **{f"{m} ({s} stack)": (lambda m=m, s=s: graft(m, s)) for m in GRAFT_METHODS for s in ("vmap", "loop")},
                 **{f"baseline {k}": (lambda k=k: baseline(k)) for k in BASELINE_METHODS},
                 "inversion + NetGraft on its images": inversion,
                 "DFAD (one-stage, after two-stage)": lambda: game(DF.run_datafree),
                 "GAN (one-stage, after two-stage)": lambda: game(G.run_gan)}
        for name, fn in paths.items():
            t0 = time.perf_counter()
            try:
                with precision(prec, dry_run):
                    ok, rec = fn()
                err = ""
            except Exception as exc:  # a check reports every path, failing or not
                ok, rec, err = False, {}, f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            rows.append({"path": name, "precision": rec.get("precision", prec), "ok": bool(ok),
                         "s": round(time.perf_counter() - t0, 2), "error": err[:300]})
            print(f"  {'PASS' if ok else 'FAIL'}  {name:40s} {rows[-1]['precision']:5s} {rows[-1]['s']:7.2f} s  {err[:120]}",
                  flush=True)
    return rows


def emulated_tests(dry_run: bool) -> dict:
    """tests/test_gpu_path.py (the CPU's rehearsal of these paths), where pytest is installed."""
    if dry_run:
        return {"skipped": "the test suite runs them (this is a dry run inside it)"}
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"skipped": "pytest is not installed here (bring its wheels, see the README)"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_path.py"],
                          cwd=REPO, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"  tests/test_gpu_path.py: {tail}", flush=True)
    return {"returncode": proc.returncode, "summary": tail}


# --------------------------------------------------------------------------- 2. chapter 8
def chapter8(work: Path, data_root: Path, profile: str, device: str) -> dict:
    from nbgraft.book import run_book

    root = fresh_root(work, "chapter08")
    t0 = time.perf_counter()
    # without its faster-students section, which a GPU runs by default: the goal was set for the chapter before that
    # section existed, and the section adds grafting runs of its own (student shapes x N x seeds)
    run_book(profile=profile, chapters=["08"], data_root=data_root, output_root=root, device=device, build=False,
             extra_parameters={"speed": False})
    wall = time.perf_counter() - t0
    print(f"  chapter 8 ({profile} profile) from an empty output root: {wall:.1f} s", flush=True)
    return {"profile": profile, "wall_s": wall}


# --------------------------------------------------------------------------- 3. VGG NetGraft, 3 seeds
def vgg_netgraft(work: Path, data_root: Path, profile: str, shots: int, device: str) -> dict:
    from nbgraft.runs.experiments import graft_seeds
    from nbgraft.runs.teacher import get_teacher

    root = fresh_root(work, "vgg")
    kw = {"data_root": data_root, "output_root": root, "device": device}
    t0 = time.perf_counter()
    _, tm = get_teacher("cifar10", profile, **kw)
    teacher_s = time.perf_counter() - t0
    print(f"  {profile}-profile CIFAR-10 teacher trained here: {teacher_s:.1f} s on {tm['train_images']} images, "
          f"test {tm['test_accuracy']:.2f} %", flush=True)
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        runs = graft_seeds("cifar10", shots, [0, 1, 2], profile, **kw)
        graft_s = time.perf_counter() - t0
    acc = [m["test_accuracy"] for m in runs]
    util = gpu.mean
    print(f"  NetGraft N={shots}, seeds 0 1 2 together ({runs[0]['seed_stack']} stack): {graft_s:.1f} s, test "
          f"{sum(acc) / 3:.2f} % (teacher {tm['test_accuracy']:.2f} %), mean GPU utilisation "
          f"{'n/a (no nvidia-smi)' if util is None else f'{util:.1f} %'} over {len(gpu.samples)} samples", flush=True)
    return {"teacher_s": teacher_s, "teacher_test_accuracy": tm["test_accuracy"], "graft_s": graft_s,
            "test_accuracy": acc, "gpu_utilisation_mean": util, "gpu_samples": len(gpu.samples),
            "stack": runs[0]["seed_stack"], "precision": runs[0]["machine"]["precision"]}


# --------------------------------------------------------------------------- 4. teacher loop vs raw step
def teacher_rates(data_root: Path, profile: str, seconds: float, device: str) -> dict:
    """Images/s of the raw training step (fp32, bf16) and of the book's teacher loop, on the profile's teacher."""
    from nbgraft.models import build
    from nbgraft.runs.teacher import teacher_spec_for, train_epoch
    from nbgraft.training import generator, sgd_with_cosine

    dev = DEV.pick_device(device)
    prof = get_profile(profile)
    spec = teacher_spec_for("cifar10", prof)
    sched = prof.teacher_for("cifar10")
    pol = DEV.policy(dev)

    def model():
        torch.manual_seed(0)
        m = build(spec).to(dev)
        return m.to(memory_format=torch.channels_last) if pol.channels_last else m

    out = {}
    for prec in ("fp32", "bf16"):
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        x = torch.randn(sched.batch_size, 3, 32, 32, device=dev)
        if pol.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (sched.batch_size,), device=dev)
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if prec == "bf16" else contextlib.nullcontext

        def step():
            with ctx():
                loss = F.cross_entropy(m(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(5):
            step()
        sync(dev)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 6:
            for _ in range(10):
                step()
            n += 10
            sync(dev)
        out[f"raw_{prec}_images_s"] = n * sched.batch_size / (time.perf_counter() - t0)
    data = D.load_dataset("cifar10", data_root)
    split = D.make_split(data, prof.val_per_class["cifar10"])
    idx = split.teacher_train[: sched.train_limit]  # as the teacher trains (the tiny profile caps it)
    xs = D.to_tensor(data.x_train[idx], "cifar10", dev)
    ys = torch.from_numpy(data.y_train[idx]).to(dev)
    m = model()
    steps = -(-len(xs) // sched.batch_size)
    opt, lr = sgd_with_cosine(m, sched.lr, sched.momentum, sched.weight_decay, 1000 * steps, steps)
    warm = 8 * sched.batch_size
    train_epoch(m, xs[:warm], ys[:warm], opt, lr, sched, generator(0, dev))  # warm-up (cuDNN picks its kernels)
    sync(dev)
    images, epoch, t0 = 0, 1, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train_epoch(m, xs, ys, opt, lr, sched, generator(epoch, dev))
        images, epoch = images + len(xs), epoch + 1
    sync(dev)
    out["loop_images_s"] = images / (time.perf_counter() - t0)
    out["loop_precision"] = pol.precision
    raw = out[f"raw_{pol.precision}_images_s"]
    out["loop_over_raw"] = out["loop_images_s"] / raw
    print(f"  {profile} VGG16 teacher, batch {sched.batch_size}: raw step {out['raw_fp32_images_s']:,.0f} images/s "
          f"(fp32), {out['raw_bf16_images_s']:,.0f} (bf16); the book's loop ({pol.precision}) "
          f"{out['loop_images_s']:,.0f} images/s over {images} images = {out['loop_over_raw']:.2f} of the raw step",
          flush=True)
    return out


# --------------------------------------------------------------------------- 5. GAN timing
def gan_timing(work: Path, data_root: Path, profile: str, device: str) -> dict:
    from nbgraft.zeroshot.checks import time_schemes

    m = time_schemes("gan", profile, schemes=("two_stage", "one_stage"), data_root=data_root,
                     output_root=fresh_root(work, "gan"), device=device)
    ratio = m["ratios"]["one_stage/two_stage"]
    print(f"  GAN ({profile}): {m['median_s']['one_stage'] * 1e3:.2f} ms one-stage vs "
          f"{m['median_s']['two_stage'] * 1e3:.2f} ms two-stage per iteration: ratio {ratio:.3f}", flush=True)
    return {"median_s": m["median_s"], "ratio": ratio}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny profile on the CPU, CUDA's policy emulated")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=None, help="default: $NBGRAFT_DATA or <repo>/data")
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    ap.add_argument("--loop-seconds", type=float, default=None, help="teacher loop timing (default 60; 2 dry)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry else args.device
    dev = DEV.pick_device(device)
    if not dry and dev.type != "cuda":
        print("gpu_check: no CUDA GPU here; use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    data_root = Path(args.data_root) if args.data_root else D.default_data_root()
    small, big = ("tiny", "tiny") if dry else ("cpu", "paper")
    loop_s = args.loop_seconds or (2.0 if dry else 60.0)
    print(f"gpu_check on {DEV.machine(dev)}{' (dry run: tiny profile, CUDA policy emulated)' if dry else ''}",
          flush=True)
    results: dict = {"machine": DEV.machine(dev), "dry_run": dry}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nbgraft-gpu-check-") as tmp:
        work = Path(tmp)
        sections = [
            ("paths", "1. every path on the device", lambda: check_paths(device, work, data_root, dry)),
            ("emulated_tests", "   the CPU-emulated GPU tests", lambda: emulated_tests(dry)),
            ("chapter08", "2. chapter 8 through papermill, fresh", lambda: chapter8(work, data_root, small, device)),
            ("vgg_netgraft", "3. VGG16 NetGraft at N=10, 3 seeds",
             lambda: vgg_netgraft(work, data_root, small, 2 if dry else 10, device)),
            ("teacher_loop", "4. teacher loop vs raw step", lambda: teacher_rates(data_root, big, loop_s, device)),
            ("gan", "5. GAN one-stage vs two-stage", lambda: gan_timing(work, data_root, small, device)),
        ]
        for key, title, fn in sections:
            print(title, flush=True)
            t0 = time.perf_counter()
            emulated = DEV.emulate("cuda") if dry and key != "chapter08" else contextlib.nullcontext()
            try:
                with emulated:  # a dry run runs CUDA's policy on the CPU (the chapter runs in its own kernel)
                    results[key] = fn()
            except Exception as exc:  # report it and go on: one broken section must not hide the others
                traceback.print_exc()
                results[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"  FAILED: {results[key]['error']}", flush=True)
            results.setdefault("section_s", {})[key] = time.perf_counter() - t0
    measured = {
        "chapter 8 fresh (s)": results.get("chapter08", {}).get("wall_s"),
        "mean GPU utilisation while grafting (%)": results.get("vgg_netgraft", {}).get("gpu_utilisation_mean"),
        "teacher loop / raw step rate": results.get("teacher_loop", {}).get("loop_over_raw"),
        "GAN one-stage / two-stage time per iteration": results.get("gan", {}).get("ratio"),
    }
    print("\ntargets" + (" (dry run: measured on the CPU, not comparable)" if dry else ""))
    results["targets"] = []
    for name, (goal, sense) in TARGETS.items():
        value = measured[name]
        met = None if value is None else (value <= goal if sense == "<=" else value >= goal)
        results["targets"].append({"target": name, "value": value, "goal": goal, "sense": sense, "met": met})
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {name:48s} {shown:>10s}  goal {sense} {goal:g}  {'-' if met is None else 'met' if met else 'NOT met'}")
    paths_ok = isinstance(results.get("paths"), list) and all(r["ok"] for r in results["paths"])
    errors = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    results["ok"] = paths_ok and not errors
    results["wall_s"] = time.perf_counter() - started
    print(f"\nevery path ran: {paths_ok}; failed sections: {errors or 'none'}; {results['wall_s']:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
