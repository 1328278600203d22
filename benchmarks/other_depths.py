"""The ResNet family's defaults on checkpoints nobody chose anything on (issue 29, item 4).

Every recipe and student default of the ResNet family was chosen on the published ResNet-56. This grafts other
published CIFAR-10 ResNets (the same author's ResNet-20/32/44, `akamaster/pytorch_resnet_cifar10`, BSD-2-Clause;
not shipped with the book: download them into a folder first) with those defaults, exactly as a user who brings one
would (`nbgraft.load_teacher`, the family's recipe and default student), and prints test accuracy against the
teacher's, three draws at N = 1 and 10. A student that drops blocks (`--student '{"unit_blocks": [2, 2, 3]}'`) is
measured the same way, with its size beside. Results are cached like any run (under the files' checksums).

    python benchmarks/other_depths.py DIR                     # every resnetD-*.th in DIR (~3 min for a ResNet-20)
    python benchmarks/other_depths.py DIR --student '{"unit_blocks": [2, 2, 3]}' --shots 10
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from nbgraft import load_teacher
from nbgraft.runs.netgraft import graft_seeds


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a folder of published-format checkpoints named resnetD-*.th")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--student", type=json.loads, default=None, help="the family's student options, as JSON")
    p.add_argument("--data-root", default=None)
    p.add_argument("--output-root", default=None)
    args = p.parse_args(argv)
    files = sorted(args.folder.glob("resnet*-*.th"), key=lambda f: int(re.match(r"resnet(\d+)", f.name).group(1)))
    if not files:
        raise SystemExit(f"no resnetD-*.th checkpoint in {args.folder}")
    rows = []
    for f in files:
        teacher = load_teacher(f, arch=f.name.split("-")[0])
        for n in args.shots:
            runs = pd.DataFrame(graft_seeds("cifar10", n, args.seeds, "cpu", teacher=teacher, student=args.student,
                                            data_root=args.data_root, output_root=args.output_root))
            rows.append({"teacher": runs.teacher_name.iloc[0], "shots": n, "seeds": len(runs),
                         "teacher_accuracy": runs.teacher_test_accuracy.iloc[0],
                         "accuracy_mean": runs.test_accuracy.mean(), "accuracy_std": runs.test_accuracy.std(),
                         "gap": runs.teacher_test_accuracy.iloc[0] - runs.test_accuracy.mean(),
                         "params_ratio": runs.student_params.iloc[0] / runs.teacher_params.iloc[0],
                         "macs_ratio": runs.student_flops.iloc[0] / runs.teacher_flops.iloc[0],
                         "wall_s_per_seed": runs.wall_s.mean()})
            print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
