"""The code a GPU runs, executed on the CPU the way CUDA runs it (`nbgraft.device.emulate("cuda")`: the CUDA
policy's seed stack (vmap), scoring chunks and, with precision="bf16", bf16 autocast on the CPU).

Every path a chapter takes on a GPU runs here: the teacher's training, both seed stacks through both
stages, the baselines, scoring, inversion, DFAD and the GAN, each asserting that it runs, that its
losses are finite and that its outputs have the dtype the rest of the book expects. The paper profile's
full-size VGG16 runs a fraction of its schedule (one epoch per stage on 20 real images, random teacher
weights): those tests check that the full-size path runs and computes what the plain path computes, not
what it learns.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from nbgraft import data as D
from nbgraft import device as DEV
from nbgraft.grafting import LoopedParts, SharedBoundaries, StackedParts, graft_blocks_stacked, graft_net_stacked
from nbgraft.grafting import new_parts
from nbgraft.runs.experiments import graft_seeds, run_student, student_spec_for
from nbgraft.grafting import Grafted, netgraft
from nbgraft.models import build
from nbgraft.methods import STUDENT_METHODS
from nbgraft.profiles import get_profile
from nbgraft.runs.teacher import get_teacher, teacher_spec_for

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
    real_autocast = torch.autocast

    def counting(*args, **kw):
        entered.append(kw.get("dtype"))
        return real_autocast(*args, **kw)

    monkeypatch.setattr(torch, "autocast", counting)
    parts = new_parts(teacher, s_spec, seed=0)
    with DEV.emulate("cuda", precision="bf16"):
        student, block_log, net_log = netgraft(teacher, parts, x, replace(sched, block_epochs=(1,), net_epochs=(1,)),
                                               SHOTS, seed=0)
    assert torch.bfloat16 in entered, "the grafting stages never entered bf16 autocast"
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


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_vmap_stack_runs_both_stages_as_cuda_runs_it(paper_setup, precision):
    """The GPU default (vmap) under CUDA's policy: the teacher's activations come out of autocast in bf16 and
    enter the stacked students (this raised 'Input type (c10::BFloat16) and bias type (float)' before)."""
    teacher, s_spec, x, sched = paper_setup
    sched = replace(sched, block_epochs=(1,), net_epochs=(1,))
    seeds = [0, 1]
    stacked = StackedParts([new_parts(teacher, s_spec, seed) for seed in seeds])
    xs = torch.stack([x, x])
    with DEV.emulate("cuda", precision=precision) as pol:
        assert pol.stack == "vmap" and DEV.policy("cpu").precision == precision
        logs = (graft_blocks_stacked(teacher, stacked, xs, sched, SHOTS, seeds),
                graft_net_stacked(teacher, stacked, xs, sched, SHOTS, seeds))
        bounds = SharedBoundaries(teacher, x[:8], stacked.first)
        logits = bounds.hybrid_logits(stacked, teacher, stacked.first, len(teacher) - 1)
    for log in (*logs[0], *logs[1]):
        values = [v for vs in log.losses.values() for v in vs]
        assert values and all(math.isfinite(v) for v in values)
    assert logits.shape == (2, 8, 10) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


# --------------------------------------------------------------------------- every chapter's path, as CUDA runs it
@pytest.fixture(scope="module")
def cuda_bf16_root(data_root, tmp_path_factory):
    """A fresh output root whose tiny teacher was trained under CUDA's policy with bf16 autocast."""
    root = tmp_path_factory.mktemp("cuda_bf16")
    with DEV.emulate("cuda", precision="bf16"):
        net, m = get_teacher("cifar10", "tiny", data_root=data_root, output_root=root, device="cpu")
    assert m["machine"]["precision"] == "bf16" and m["machine"]["emulating"] == "cuda"
    assert all(math.isfinite(h["train_loss"]) for h in m["history"]) and 0 <= m["test_accuracy"] <= 100
    assert net(torch.zeros(2, 3, 32, 32)).dtype == torch.float32
    return root


def _with_teacher(root, tmp_path):
    """A fresh output root holding only the teacher of `root` (runs differing in policy share cache keys)."""
    out = tmp_path / "out"
    shutil.copytree(root / "cache" / "teacher", out / "cache" / "teacher")
    return out


@pytest.mark.parametrize("precision, stack", [("bf16", "vmap"), ("bf16", "loop"), ("fp32", "auto")])
@pytest.mark.parametrize("method", ["netgraft", "netgraft_paper"])
def test_grafting_runs_score_and_cache_as_cuda_runs_them(data_root, cuda_bf16_root, tmp_path, method, precision,
                                                         stack):
    """Both recipes through the experiments layer (teacher cache, both stages, scoring on shared boundaries,
    export, the cache), two seeds trained together."""
    kw = {"data_root": data_root, "output_root": _with_teacher(cuda_bf16_root, tmp_path), "device": "cpu"}
    with DEV.emulate("cuda", precision=precision):
        runs = graft_seeds("cifar10", 2, [0, 1], "tiny", method=method, stack=stack, **kw,
                           block_epochs=(2,), net_epochs=(1,), val_every=1)
    for m in runs:
        assert m["machine"]["precision"] == precision and m["seed_stack"] == ("vmap" if stack == "auto" else stack)
        for key in ("test_accuracy", "val_accuracy", "test_agreement"):
            assert 0 <= m[key] <= 100
        losses = [v for stage in ("block_losses", "net_losses") for vs in m[stage].values() for v in vs]
        assert losses and all(math.isfinite(v) for v in losses)
        assert all(0 <= sc["val_accuracy"] <= 100 for sc in m["chains"].values())


@pytest.mark.parametrize("kind", STUDENT_METHODS)
def test_student_methods_train_as_cuda_runs_them(data_root, cuda_bf16_root, kind):
    with DEV.emulate("cuda", precision="bf16"):
        m = run_student(kind, "cifar10", 2, 0, "tiny", data_root=data_root, output_root=cuda_bf16_root, device="cpu")
    curve = m["relative_fit_error"] if kind == "fskd" else m["loss_curve"]  # fskd takes no gradient step
    assert curve and all(math.isfinite(v) for v in curve)
    assert m["machine"]["precision"] == "bf16" and 0 <= m["test_accuracy"] <= 100


def test_scoring_gives_float32_logits_under_bf16_autocast(data_root, cuda_bf16_root):
    from nbgraft.evaluate import predict

    net, _ = get_teacher("cifar10", "tiny", data_root=data_root, output_root=cuda_bf16_root, device="cpu")
    x = torch.randn(300, 3, 32, 32)
    with DEV.emulate("cuda", precision="bf16") as pol:
        assert pol.eval_chunk > 128  # a GPU scores in large chunks
        out = predict(net, x)
    ref = predict(net, x)  # the CPU's fp32 path
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9  # bf16 rounding flips only near-ties


def test_zero_shot_paths_run_as_cuda_runs_them(data_root, cuda_bf16_root):
    """Chapter 7 on a GPU: inversion, NetGraft on the inverted images, DFAD and the GAN (both schemes)."""
    from nbgraft.zeroshot import dfad as DF
    from nbgraft.zeroshot import gan as G
    from nbgraft.zeroshot import inversion as I

    kw = {"data_root": data_root, "output_root": cuda_bf16_root, "device": "cpu"}
    with DEV.emulate("cuda", precision="bf16"):
        pool = I.synthetic_pool("cifar10", 0, "tiny", **kw)
        synth = graft_seeds("cifar10", 1, [0], "tiny", source="synthetic", **kw)[0]
        runs = {"dfad": DF.run_datafree("one_stage", "tiny", **kw), "gan": G.run_gan("one_stage", "tiny", **kw)}
    assert pool["x"].dtype == np.uint8 and all(math.isfinite(v) for v in pool["metrics"]["losses"]["loss"])
    assert 0 <= synth["test_accuracy"] <= 100 and synth["image_source"] == "synthetic"
    for name, m in runs.items():
        assert m["machine"]["precision"] == "bf16", name
        assert m["iterations"] > 0 and all(math.isfinite(v) for k in ("d_loss", "g_loss") for v in m["losses"][k])
