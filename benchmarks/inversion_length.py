"""How long chapter 7's inversion should run, chosen without a real image or label.

For each length, the teacher's synthetic images (seed 0, K per class, `nbgraft.zeroshot.inversion`) train the
book's NetGraft (its data-free recipe); each student is then scored by the label-free rule
(`nbgraft.evaluate.label_free_score`): agreement with the teacher on CutMix probes of held-out synthetic images,
the pools of another seed made at every length tried (so no length is scored on its own kind of images only).
The shortest length within half a point of the best wins (the book's tie rule). Real validation accuracy is
printed beside, as a check, never to choose. The winner becomes `InversionSchedule.iterations` of the profile.
Run it on an idle machine.

    python benchmarks/inversion_length.py                       # 150 and 250 iterations, K = 10 (~3 min)
    python benchmarks/inversion_length.py --iterations 100 150 250 --per-class 10
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd
import torch

from nbgraft import data as D
from nbgraft.evaluate import predict
from nbgraft.grafting.engine import train_seeds
from nbgraft.grafting.parts import export_student, new_parts
from nbgraft.evaluate import PROBES, probe_images, teacher_agreement
from nbgraft.profiles import get_profile
from nbgraft.runs.setting import prepare, recipe_for, student_spec_for
from nbgraft.runs.tuning import TIE_POINTS
from nbgraft.zeroshot.inversion import class_labels, inversion_schedule, invert, teacher_input_to_uint8


def synthetic(teacher, sched, per_class: int, seed: int) -> torch.Tensor:
    """The teacher's images at this schedule, rounded to 8 bits as a pool stores them, as teacher input."""
    labels = class_labels(teacher.num_classes, per_class, next(teacher.parameters()).device)
    x, _ = invert(teacher, labels, sched, seed, teacher.spec.mean, teacher.spec.std)
    images = teacher_input_to_uint8(x, teacher.spec.mean, teacher.spec.std)
    return D.to_tensor(images, "cifar10", x.device, mean=teacher.spec.mean, std=teacher.spec.std)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--iterations", nargs="+", type=int, default=[150, 250])
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", help="also write the table here")
    args = ap.parse_args()
    profile = get_profile(args.profile)
    s = prepare("cifar10", args.per_class, args.seed, profile)  # the teacher and the (real) validation pool
    teacher = s.teacher
    sched = recipe_for(profile, "netgraft", "cifar10", source="synthetic")
    s_spec = student_spec_for(teacher.spec)
    base = inversion_schedule(profile)
    held_out = torch.cat([synthetic(teacher, replace(base, iterations=k), args.per_class, args.seed + 1)
                          for k in args.iterations])
    probes = probe_images(held_out, PROBES, args.seed)
    t_probe = predict(teacher, probes).argmax(1)
    rows = []
    for k in args.iterations:
        x = synthetic(teacher, replace(base, iterations=k), args.per_class, args.seed)
        parts = new_parts(teacher, s_spec, args.seed, sched.init, x)
        trained, _, _ = train_seeds(teacher, [parts], x[None], sched, args.per_class, [args.seed])
        student = export_student(teacher, trained[0], folded=True).eval()
        rows.append({"iterations": k, "label_free_agreement": teacher_agreement(student, teacher, probes, t_probe),
                     "val_accuracy_check": (predict(student, s.x_val).argmax(1) == s.y_val).float().mean().item()
                     * 100})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    best = table.label_free_agreement.max()
    chosen = table[table.label_free_agreement >= best - TIE_POINTS].iterations.min()
    print(f"\nNetGraft on K = {args.per_class} synthetic images per class (seed {args.seed}); label-free score on "
          f"{PROBES} probes of seed {args.seed + 1}'s pools; {torch.get_num_threads()} threads:")
    print(table.round(2).to_string(index=False))
    print(f"chosen without labels: {chosen} iterations")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
