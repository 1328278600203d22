"""What dropping blocks from each stage of a CIFAR ResNet buys on this CPU (no training: the architectures only).

Every block of a CIFAR ResNet has the same multiply-accumulates, but not the same time: stage 1 runs on 32x32 maps
of 16 channels, where moving memory dominates. This times each layout of `unit_blocks` (blocks kept per unit of
three, per stage) against the teacher with its BatchNorms folded (as the BN-free students are), batch 128 and 1
(`nbgraft.runs.speed.cpu_speedup`: medians of alternating timings), and prints the ratios; chapter 8's students were picked from it and from their validation accuracy
(benchmarks/README.md, "Tuning history"). Run it on an idle machine.

    python benchmarks/drop_layouts.py                  # ResNet-56, the layouts that keep whole units of stage 3
    python benchmarks/drop_layouts.py --all            # all 27 layouts (~5 min)
"""

from __future__ import annotations

import argparse
import itertools

import pandas as pd
import torch

from nbgraft.evaluate import count_flops, count_params
from nbgraft.models import fold_batchnorms
from nbgraft.models import resnet as R
from nbgraft.runs.speed import cpu_speedup


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--all", action="store_true", help="every layout, not only those keeping stage 3 whole or "
                                                       "dropping one block per unit everywhere")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    t_spec = R.teacher_spec(args.depth)
    teacher = fold_batchnorms(R.build(t_spec))  # as chapter 8 times it: BatchNorms folded, as in the students
    layouts = list(itertools.product((1, 2, 3), repeat=3))
    if not args.all:
        layouts = [u for u in layouts if u[2] == 3 or u == (2, 2, 2)]
    rows = []
    with torch.no_grad():
        for u in layouts:
            s_spec = R.student_spec(t_spec, widths=t_spec.widths, unit_blocks=u)
            student = R.build(s_spec).eval()
            rows.append({"unit_blocks": "/".join(map(str, u)),
                         "blocks_kept": "/".join(str(sum(s_spec.unit_sizes(s))) for s in range(3)),
                         "params_ratio": count_params(student) / count_params(teacher),
                         "macs_ratio": count_flops(student) / count_flops(teacher),
                         "cpu_speedup_b128": cpu_speedup(teacher, student, 128, args.rounds),
                         "cpu_speedup_b1": cpu_speedup(teacher, student, 1, args.rounds, repeats=20)})
            print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
