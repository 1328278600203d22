"""Which generator width and batch size chapter 7's data-free student should use for its time budget.

Each size trains DFAD two-stage (nbgraft.zeroshot.dfad, seed 0) for the same training seconds and is scored
without a real image or label: the student's agreement with the teacher on CutMix probes
(`nbgraft.evaluate.label_free_score`) of the teacher's own synthetic images (chapter 7's inverted pool of seed
0). The winner (the best last score, or the smallest generator within half a point of it) becomes the cpu
schedule in `nbgraft.zeroshot.dfad.DATAFREE_SCHEDULES`. The **validation pool** (real training images held out
from the teacher's training) is printed beside as a check, never to choose; the test set is not read. Prints a
table (and writes it with --csv). Run it on an otherwise idle machine.

    python benchmarks/dfad_sizing.py                      # the cpu profile's teacher, 64 s per size
    python benchmarks/dfad_sizing.py --budget 30 --sizes 16x64 32x128
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
import torch

from nbgraft import data as D
from nbgraft.device import pick_device
from nbgraft.zeroshot.dfad import OwnBlocks, build_datafree, datafree_schedule, shared_features
from nbgraft.evaluate import predict, report
from nbgraft.evaluate import PROBES, probe_images
from nbgraft.runs.tuning import TIE_POINTS
from nbgraft.zeroshot.gan import book_teacher
from nbgraft.zeroshot.inversion import synthetic_pool
from nbgraft.zeroshot.onestage import Noise, train_run
from nbgraft.profiles import get_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--budget", type=float, default=64.0, help="training seconds per size")
    ap.add_argument("--sizes", nargs="+", default=["16x64", "32x128", "16x32", "8x64"],
                    help="generator width x batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", help="also write the table here")
    args = ap.parse_args()
    device = pick_device("auto")
    profile = get_profile(args.profile)
    teacher, tm, _ = book_teacher(profile, None, None, device)
    data = D.load_dataset("cifar10")
    val = D.make_split(data, profile.val_per_class["cifar10"]).val
    x_val = D.to_tensor(data.x_train[val], "cifar10", device)
    y_val = torch.from_numpy(data.y_train[val]).to(device)
    t_val = predict(teacher, x_val).argmax(1)
    pool = synthetic_pool("cifar10", args.seed, profile, device=device)  # made from the teacher alone
    probes = probe_images(D.to_tensor(pool["x"], "cifar10", device), PROBES, args.seed)
    t_probe = predict(teacher, probes).argmax(1)
    rows = []
    for size in args.sizes:
        width, batch = (int(v) for v in size.split("x"))
        sched = dataclasses.replace(datafree_schedule(profile), width=width, batch_size=batch)
        m = build_datafree(sched, teacher, args.seed, device)
        h_val = shared_features(teacher, x_val, m.game.first)
        h_probe = shared_features(teacher, probes, m.game.first)
        own = OwnBlocks(m.game.student, m.game.first)

        def evaluate() -> dict:
            r = report(own, h_val, y_val, t_val)
            return {"val_accuracy": r["accuracy"], "val_agreement": r["agreement"],
                    "label_free_agreement": report(own, h_probe, t_probe)["accuracy"]}

        log = train_run(m, "two_stage", Noise(sched.z_dim, batch, args.seed + 1, device), 10**6, args.budget,
                        50, evaluate, f"data-free {size}", d_steps=sched.student_steps)
        best = max(c["val_accuracy"] for c in log["checkpoints"])
        rows.append({"width": width, "batch_size": batch, "train_s": round(log["train_s"], 1),
                     "iterations": log["iterations"], "s_per_iteration": round(log["s_per_iteration"], 3),
                     "val_accuracy_last": round(log["checkpoints"][-1]["val_accuracy"], 2),
                     "val_accuracy_best_checkpoint": round(best, 2),
                     "val_agreement_last": round(log["checkpoints"][-1]["val_agreement"], 2),
                     "label_free_agreement_last": round(log["checkpoints"][-1]["label_free_agreement"], 2)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\nDFAD two-stage, {args.budget:.0f} s of training per size, seed {args.seed}, validation pool "
          f"({len(val)} images; teacher {tm['test_accuracy']:.2f}% on test), {torch.get_num_threads()} threads:")
    print(table.to_string(index=False))
    near = table[table.label_free_agreement_last >= table.label_free_agreement_last.max() - TIE_POINTS]
    win = near.sort_values(["width", "batch_size"]).iloc[0]
    print(f"chosen without labels (label-free score, last checkpoint): {int(win.width)}x{int(win.batch_size)}")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
