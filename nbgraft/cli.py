"""`python -m nbgraft ...` (or `nbgraft ...`): the book's experiments without opening a notebook."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", help="cpu (default, 2-core machines), paper (GPU) or tiny (smoke)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device string")
    p.add_argument("--data-root", default=None, help="folder with <name>.npz or a torchvision root (default: ./data)")
    p.add_argument("--output-root", default=None, help="where the cache, figures and tables go (default: ./outputs)")


def _kw(args) -> dict:
    return {"data_root": args.data_root, "output_root": args.output_root, "device": args.device}


def cmd_teacher(args) -> int:
    from .teacher import get_teacher

    for ds in args.dataset:
        _, m = get_teacher(ds, args.profile, **_kw(args))
        print(f"{ds} teacher ({args.profile}): test accuracy {m['test_accuracy']:.2f}%, "
              f"trained in {m['wall_s'] / 60:.1f} min on {m['device']}")
    return 0


def cmd_graft(args) -> int:
    from .experiments import run_baseline, run_netgraft

    methods = ["netgraft"] + (["scratch", "kd"] if args.baselines else [])
    rows = []
    for ds in args.dataset:
        for n in args.shots:
            for seed in args.seeds:
                for method in methods:
                    t0 = time.perf_counter()
                    if method == "netgraft":
                        m = run_netgraft(ds, n, seed, args.profile, **_kw(args))
                    else:
                        m = run_baseline(method, ds, n, seed, args.profile, **_kw(args))
                    rows.append(m)
                    print(f"{ds} N={n} seed={seed} {method:8s} test {m['test_accuracy']:6.2f}%  "
                          f"agreement {m['test_agreement']:6.2f}%  run {m['wall_s']:.0f}s "
                          f"(this call {time.perf_counter() - t0:.1f}s)")
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    return 0


def cmd_table(args) -> int:
    import pandas as pd

    from .experiments import results_frame
    from .profiles import PROFILES

    # Only runs on each profile's own schedules: ablation variants and runs of older schedules stay out.
    frames = [results_frame(args.output_root, profile=p) for p in ([args.profile] if args.profile else PROFILES)]
    df = pd.concat([f for f in frames if not f.empty] or frames[:1])
    if df.empty:
        print("no finished runs in the cache yet; run `python -m nbgraft graft ...` first")
        return 1
    summary = (df.groupby(["dataset", "profile", "method", "shots"])
                 .agg(accuracy_mean=("test_accuracy", "mean"), accuracy_std=("test_accuracy", "std"),
                      agreement_mean=("test_agreement", "mean"), seeds=("seed", "nunique"),
                      teacher=("teacher_test_accuracy", "first"), wall_s_mean=("wall_s", "mean"))
                 .round(2).reset_index())
    print(summary.to_string(index=False))
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_sweep

    run_sweep(args.grid, profile=args.profile, **_kw(args))
    return 0


def cmd_book(args) -> int:
    from .book import run_book

    run_book(profile=args.profile, chapters=args.chapters or None, build=not args.no_build, **_kw(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nbgraft", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("teacher", help="train (or load from the cache) the VGG16 teacher")
    p.add_argument("--dataset", nargs="+", default=["cifar10"], help="cifar10 and/or cifar100")
    _common(p)
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("graft", help="NetGraft (and optionally both baselines) for data sets x shots x seeds")
    p.add_argument("--dataset", nargs="+", default=["cifar10"])
    p.add_argument("--shots", nargs="+", type=int, default=[10], help="images per class, N")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="few-shot draws")
    p.add_argument("--baselines", action="store_true", help="also train the scratch and KD students")
    p.add_argument("--json", action="store_true", help="print every run's full metrics as JSON")
    _common(p)
    p.set_defaults(func=cmd_graft)

    p = sub.add_parser("table", help="print mean/std over seeds of every finished run in the cache")
    p.add_argument("--profile", default=None, help="only this profile (each profile's runs on its own schedules)")
    p.add_argument("--output-root", default=None)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("sweep", help="the ablations chapter's grid, resumable, into outputs/tables")
    p.add_argument("--grid", default="default", help="'default' (fits the profile) or 'full' (the paper's grid)")
    _common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("book", help="run every chapter with papermill, then build the HTML book")
    p.add_argument("--chapters", nargs="*", help="chapter numbers or names to run (default: all)")
    p.add_argument("--no-build", action="store_true", help="execute notebooks only, skip the HTML build")
    _common(p)
    p.set_defaults(func=cmd_book)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"nbgraft: error: {err}", file=sys.stderr)
        return 2
