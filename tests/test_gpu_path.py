"""The code a GPU runs, executed on the CPU: the paper profile's full-size VGG16 through both stages under
bf16 autocast (what CUDA runs), and the vmap seed stack against the loop stack at full size.

A fraction of the schedule only (one epoch per stage on 20 real images, random teacher weights): these
tests check that the full-size path runs and computes what the plain path computes, not what it learns.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from nbgraft import batched, data as D, graft
from nbgraft.batched import LoopedParts, StackedParts, graft_blocks_stacked, graft_net_stacked
from nbgraft.experiments import new_parts, student_spec_for
from nbgraft.graft import Grafted, graft_blocks, graft_net, netgraft
from nbgraft.models import build
from nbgraft.profiles import get_profile
from nbgraft.teacher import teacher_spec_for

SHOTS = 2


@pytest.fixture(scope="module")
def paper_setup(data_root):
    """The paper profile's CIFAR-10 teacher (full-size VGG16, random weights) and 2 real images per class."""
    spec = teacher_spec_for("cifar10", get_profile("paper"))
    torch.manual_seed(0)
    teacher = build(spec).eval().requires_grad_(False)
    data = D.load_dataset("cifar10", data_root)
    idx = np.concatenate([np.flatnonzero(data.y_train == c)[:SHOTS] for c in range(10)])
    x = D.to_tensor(data.x_train[idx], "cifar10", torch.device("cpu"), mean=spec.mean, std=spec.std)
    sched = get_profile("paper").graft_for("cifar10", method="netgraft_paper")
    return teacher, student_spec_for(spec), x, sched


def test_paper_profile_is_full_size(paper_setup):
    teacher, s_spec, _, _ = paper_setup
    assert sum(p.numel() for p in teacher.parameters()) > 14e6  # VGG16's CIFAR variant, not a thin one
    assert teacher.widths[-2] == 512


def test_both_stages_run_under_bf16_autocast(paper_setup, monkeypatch):
    teacher, s_spec, x, sched = paper_setup
    entered = []

    def cpu_bf16(device):
        entered.append(device.type)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(graft, "autocast", cpu_bf16)
    monkeypatch.setattr(batched, "autocast", cpu_bf16)
    parts = new_parts(teacher, s_spec, seed=0)
    student, block_log, net_log = netgraft(teacher, parts, x, replace(sched, block_epochs=(1,), net_epochs=(1,)),
                                           SHOTS, seed=0)
    assert entered, "the grafting stages never entered autocast"
    losses = [v for log in (block_log, net_log) for vs in log.losses.values() for v in np.ravel(vs)]
    assert losses and np.isfinite(losses).all()
    with torch.no_grad():
        out = student(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_vmap_stack_equals_loop_stack_for_one_step_at_full_size(paper_setup):
    """One step per stage (the batch holds all 20 images): the losses before each step and the hybrid's
    outputs after it agree up to float rounding (vmap runs grouped convolutions)."""
    teacher, s_spec, x, sched = paper_setup
    sched = replace(sched, block_epochs=(1,), net_epochs=(1,), batch_per_shot=10.0)
    assert sched.batch_size(SHOTS, 10) == len(x)
    seeds = [0, 1]
    singles = [new_parts(teacher, s_spec, seed) for seed in seeds]
    looped, stacked = LoopedParts([copy.deepcopy(p) for p in singles]), StackedParts([copy.deepcopy(p) for p in singles])
    xs = torch.stack([x, x])
    logs = {}
    for name, parts in (("loop", looped), ("vmap", stacked)):
        logs[name] = (graft_blocks_stacked(teacher, parts, xs, sched, SHOTS, seeds),
                      graft_net_stacked(teacher, parts, xs, sched, SHOTS, seeds))
    for k in range(len(seeds)):
        for stage in (0, 1):
            a, b = logs["loop"][stage][k].losses, logs["vmap"][stage][k].losses
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=0, err_msg=key)
    x_eval = x[:8]
    for a_parts, b_parts in zip(looped.unstack(), stacked.unstack()):
        with torch.no_grad():
            a = Grafted(teacher, a_parts, a_parts.first, len(teacher) - 1).eval()(x_eval)
            b = Grafted(teacher, b_parts, b_parts.first, len(teacher) - 1).eval()(x_eval)
        # One Adam step per stage moves each parameter by at most its learning rate: that bounds the drift.
        torch.testing.assert_close(b, a, atol=1e-3 * float(a.abs().max()), rtol=0)
