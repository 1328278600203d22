"""`python -m nbgraft ...` (or `nbgraft ...`): the book's experiments without opening a notebook.

Every expected failure (bad option, missing data, a chapter that failed, ...) prints one line,
`nbgraft: error: ...`, and exits with 2; Ctrl-C exits with 130 and says what was kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__


def _checked(check, what: str):
    """An argparse type: the text as a whole number, checked as the chapters check it (nbgraft.data)."""

    def parse(text: str) -> int:
        try:
            return check(int(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err) if "got" in str(err) else
                                             f"{what} is a whole number, got {text!r}") from None

    return parse


def _seed(text: str) -> int:
    from .data import check_seed

    return _checked(check_seed, "a seed")(text)


def _shots(text: str) -> int:
    from .data import check_shots

    return _checked(check_shots, "N")(text)


def _student(text: str) -> dict:
    """--student's JSON object of the teacher family's student options."""
    try:
        opts = json.loads(text)
    except ValueError:
        opts = None
    if not isinstance(opts, dict):
        raise argparse.ArgumentTypeError(f"--student takes a JSON object of the student's options, e.g. "
                                         f"'{{\"unit_blocks\": [1, 3, 3]}}', not {text!r}")
    return opts


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", help="cpu (2-core machines), paper (GPU) or tiny (smoke)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device string")
    p.add_argument("--data-root", default=None,
                   help="folder with <name>.npz or a torchvision root (default: $NBGRAFT_DATA or <repo>/data)")
    p.add_argument("--output-root", default=None,
                   help="where the cache, figures and tables go (default: $NBGRAFT_OUTPUTS or <repo>/outputs)")


def _kw(args) -> dict:
    return {"data_root": args.data_root, "output_root": args.output_root, "device": args.device}


def _teacher(args) -> str:
    """--teacher, or the checkpoint --teacher-weights names (loaded and checked against --arch first)."""
    if args.teacher_weights is None:
        if args.arch is not None:
            raise ValueError("--arch goes with --teacher-weights PATH (a checkpoint of your own)")
        return args.teacher
    if args.arch is None:
        raise ValueError("--teacher-weights needs --arch resnetD, the depth 6n + 2 the file holds (it is checked "
                         "against the file), e.g. --arch resnet20")
    from .runs.teacher import load_teacher

    return load_teacher(args.teacher_weights, args.arch, args.md5).checkpoint


def cmd_teacher(args) -> int:
    from .runs.teacher import get_teacher, teacher_label

    teacher = _teacher(args)
    for ds in args.dataset:
        _, m = get_teacher(ds, args.profile, teacher=teacher, **_kw(args))
        how = f"trained in {m['wall_s'] / 60:.1f} min" if m["train_images"] else "published weights"
        print(f"{teacher_label(teacher)} teacher on {ds} ({args.profile}): test accuracy {m['test_accuracy']:.2f}%, "
              f"{how} on {m['device']}")
    return 0


def cmd_graft(args) -> int:
    from .runs.experiments import run_method
    from .methods import BASELINE_METHODS, GRAFT_METHODS

    if args.images != "real" and (args.baselines or set(args.method) - set(GRAFT_METHODS)):
        raise ValueError("only the NetGraft recipes train on images other than a real draw; drop --baselines and the "
                         "other methods, or use --images real")
    methods = list(dict.fromkeys([*args.method, *(BASELINE_METHODS if args.baselines else ())]))
    from .runs.teacher import teacher_label

    teacher = _teacher(args)
    rows = []
    for ds in args.dataset:
        for n in args.shots:
            for seed in args.seeds:
                for method in methods:
                    asked = time.time()
                    src = {"source": args.images} if method in GRAFT_METHODS else {}
                    m = run_method(method, ds, n, seed, args.profile, teacher=teacher, student=args.student, **src,
                                   **_kw(args))
                    rows.append(m)
                    fresh = m.get("finished_at", 0) >= asked  # finished by this call, or read back
                    print(f"{teacher_label(teacher)} {ds} N={n} seed={seed} {method:17s} "
                          f"test {m['test_accuracy']:6.2f}%  "
                          f"agreement {m['test_agreement']:6.2f}%  trained in {m['wall_s']:.0f}s  "
                          f"({'now' if fresh else 'from the cache'}: {m.get('cache_key', '')})")
    from .cache import default_output_root

    print(f"results are cached under {args.output_root or default_output_root()}/cache/<method>/<key>/")
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    return 0


def cmd_table(args) -> int:
    import pandas as pd

    from .cache import default_output_root
    from .runs.experiments import results_frame
    from .profiles import PROFILES, TEACHERS

    root = Path(args.output_root) if args.output_root else default_output_root()
    if not (root / "cache").is_dir():
        raise FileNotFoundError(f"no cache under {root} (no {root / 'cache'} folder): run `nbgraft graft ...` first, "
                                "or give the output root that holds it with --output-root")

    # Only runs on each profile's own recipes: ablation variants and runs of older schedules stay out.
    frames = [results_frame(args.output_root, profile=p, teacher=t)
              for p in ([args.profile] if args.profile else PROFILES) for t in TEACHERS]
    df = pd.concat([f for f in frames if not f.empty] or frames[:1])
    if df.empty:
        raise FileNotFoundError(f"no finished runs on a profile's own recipes in {root / 'cache'} yet: run "
                                "`nbgraft graft ...` first")
    summary = (df.groupby(["teacher_name", "dataset", "profile", "method", "shots"])
                 .agg(accuracy_mean=("test_accuracy", "mean"), accuracy_std=("test_accuracy", "std"),
                      agreement_mean=("test_agreement", "mean"), seeds=("seed", "nunique"),
                      teacher=("teacher_test_accuracy", "first"), wall_s_mean=("wall_s", "mean"))
                 .round(2).reset_index())
    print(summary.to_string(index=False))
    return 0


def cmd_sweep(args) -> int:
    from .cache import default_output_root
    from .runs.sweep import run_sweep

    table = run_sweep(args.grid, profile=args.profile, table_name=args.table, executor=args.executor,
                      address=args.address, **_kw(args))
    print(f"{len(table)} runs; table: {args.output_root or default_output_root()}/tables/{args.table}.csv")
    return 0


def cmd_tune(args) -> int:
    from .cache import default_output_root
    from .runs.teacher import check_teacher, teacher_label
    from .runs.tuning import run_tuning, table_for

    teacher = _teacher(args)
    table = run_tuning(args.methods, args.dataset, args.profile, teacher=teacher, extensions=args.extensions,
                       **_kw(args))
    label = teacher_label(check_teacher(teacher, args.dataset))  # the table holds every setting: print this one's
    chosen = table[table.chosen & table.method.isin(args.methods) & (table.dataset == args.dataset)
                   & (table.teacher == label)].drop_duplicates("method")
    for r in chosen.itertuples():
        print(f"{r.method:17s} best on the validation pool: learning rates x{r.lr_scale:g}, length x{r.length:g} "
              f"({r.val_accuracy_mean_over_n:.2f}% mean over N)")
    print(f"table: {args.output_root or default_output_root()}/tables/{table_for(args.profile)}.csv")
    return 0


def cmd_select(args) -> int:
    from .cache import default_output_root
    from .runs import selection as SEL

    grid = SEL.selection_grid(args.profile, **_kw(args))
    picked, runs = SEL.selection_runs(grid, args.profile, seeds=args.seeds, **_kw(args))
    table = SEL.selection_table(picked, runs, args.output_root)
    print(table.round(2).to_string(index=False))
    print(f"tables: {args.output_root or default_output_root()}/tables/selection.csv, {SEL.GRID_TABLE}.csv")
    return 0


def cmd_book(args) -> int:
    from .book import run_book

    run_book(profile=args.profile, chapters=args.chapters or None, build=not args.no_build, **_kw(args))
    return 0


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless the help already says it in words."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default:" in text else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    from .profiles import TEACHERS

    fmt = _Defaults
    ap = argparse.ArgumentParser(prog="nbgraft", description=__doc__, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"nbgraft {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    def teacher_option(p):
        p.add_argument("--teacher", default="vgg16", choices=sorted(TEACHERS),
                       help="vgg16: the profile's VGG16, trained here; resnet56: the published CIFAR-10 ResNet-56")
        p.add_argument("--teacher-weights", metavar="PATH", default=None,
                       help="instead of --teacher: a CIFAR ResNet checkpoint of your own (the published format: "
                            "layerS.B.conv1.weight ..., with or without module.), grafted with the ResNet family's "
                            "recipes; needs --arch (default: none)")
        p.add_argument("--arch", default=None,
                       help="with --teacher-weights: resnetD, the depth 6n + 2 the file holds, checked against it "
                            "(default: none)")
        p.add_argument("--md5", default=None, help="with --teacher-weights: the file's checksum, if known, checked "
                                                   "(default: none)")

    p = sub.add_parser("teacher", help="train (or load from the cache) the teacher", formatter_class=fmt)
    p.add_argument("--dataset", nargs="+", default=["cifar10"], help="cifar10 and/or cifar100")
    teacher_option(p)
    _common(p)
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("graft", help="NetGraft (and optionally the baselines) for data sets x shots x seeds",
                       formatter_class=fmt)
    p.add_argument("--dataset", nargs="+", default=["cifar10"])
    p.add_argument("--shots", nargs="+", type=_shots, default=[10], help="images per class, N")
    p.add_argument("--seeds", nargs="+", type=_seed, default=[0], help="few-shot draws")
    p.add_argument("--method", nargs="+", default=["netgraft"], choices=list(METHODS),
                   help="netgraft: the book's recipe; netgraft_paper: the paper's; pruned_kd, fskd, mir: the "
                        "field's few-shot compression methods on the same student (any method of nbgraft.methods)")
    p.add_argument("--baselines", action="store_true",
                   help="also train the four baselines (KD and labels, from random or keeping the teacher's blocks)")
    p.add_argument("--images", default="real", choices=["real", "synthetic", "noise"],
                   help="the N images per class: a real draw, the teacher's synthetic images (data-free), or noise")
    p.add_argument("--student", type=_student, default=None,
                   help="the student's options as JSON (default: the family's student), e.g. '{\"unit_blocks\": "
                        "[1, 3, 3]}', the ResNet-56 student of chapter 8 that drops blocks (1.5x faster on a CPU)")
    p.add_argument("--json", action="store_true", help="print every run's full metrics as JSON")
    teacher_option(p)
    _common(p)
    p.set_defaults(func=cmd_graft)

    p = sub.add_parser("table", help="print mean/std over seeds of every finished run in the cache",
                       formatter_class=fmt)
    p.add_argument("--profile", default=None, help="only this profile (each profile's runs on its own recipes)")
    p.add_argument("--output-root", default=None, help="default: $NBGRAFT_OUTPUTS or <repo>/outputs")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("sweep", help="the ablations chapter's grid, resumable, into outputs/tables",
                       formatter_class=fmt)
    p.add_argument("--grid", default="default",
                   help="'default' (fits the profile), 'on_request' (the part of the book's grid the CPU book runs only "
                        "on request: CIFAR-100's ablations), 'methods' (the methods table's), 'robustness' (CIFAR-10's "
                        "comparisons on a second teacher) or 'full' (the paper's grid)")
    p.add_argument("--table", default="06_sweep", help="name of the table written under <output-root>/tables")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: one run after another in this process; ray: each run (or batch of seeds) a Ray "
                        "task, one GPU each where the cluster has GPUs (needs pip install -e '.[cluster]')")
    p.add_argument("--address", default=None,
                   help="with --executor ray: 'auto' or HOST:PORT joins a running cluster; unset starts a local one")
    _common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("tune", help="the same learning-rate x length grid for every method, on the validation pool",
                       formatter_class=fmt)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--extensions", type=int, default=None, metavar="K",
                   help="rounds of grid growth past an edge its winner lies on (default: "
                        "nbgraft.runs.tuning.MAX_EXTENSIONS); each round can double the longest runs")
    teacher_option(p)
    _common(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("select", help="the book's recipe chosen with the labelled validation pool, without labels "
                       "(agreement with the teacher on probes of the N shots) and carried over from CIFAR-10's VGG16, "
                       "each on three draws (chapter 5, 'What choosing costs')", formatter_class=fmt)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    _common(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("book", help="run every chapter with papermill, then build the HTML book", formatter_class=fmt)
    p.add_argument("--chapters", nargs="*", help="chapter numbers or names to run (default: all)")
    p.add_argument("--no-build", action="store_true", help="execute notebooks only, skip the HTML build")
    _common(p)
    p.set_defaults(func=cmd_book)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from .book import BuildFailed, ChapterFailed
    from .cache import CacheLocked, DamagedEntry
    from .runs.cluster import SweepIncomplete

    try:
        return args.func(args)
    except torch.OutOfMemoryError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        print(f"nbgraft: error: the GPU ran out of memory ({first[:160]}); nothing was lost and no cache entry was "
              "touched: train fewer seeds at once (one --seeds value per call), use a smaller --profile, close other "
              "programs on the GPU, or run with --device cpu", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nbgraft: interrupted; every finished run is in the cache, a teacher resumes from its last checkpoint, "
              "and re-running the same command continues where it stopped", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ChapterFailed,
            BuildFailed, CacheLocked, DamagedEntry, SweepIncomplete) as err:
        msg = str(err).strip().splitlines()
        print(f"nbgraft: error: {' '.join(msg) if len(msg) < 4 else msg[0] + ' ' + msg[-1]}", file=sys.stderr)
        return 2
