"""The fast paths of the grafting engine compute what the plain ones compute (tiny profile, real CIFAR-10).

No timings here: benchmarks/bench_graft.py measures speed. These tests check that the joint block
stage, the teacher-activation cache, the batched seeds and the benchmark's reference loop agree with
the straightforward loops they replace.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nbgraft.grafting import LoopedParts, StackedParts, graft_blocks_stacked, graft_net_stacked
from nbgraft.cache import Entry
from nbgraft.grafting import new_parts
from nbgraft.runs.experiments import graft_seeds, prepare, run_netgraft
from nbgraft.grafting import GraftParts, Grafted, TeacherCache, graft_blocks, graft_loss, graft_net
from nbgraft.models.vgg import student_spec
from nbgraft.profiles import get_profile
from nbgraft.runs.teacher import get_teacher, teacher_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHOTS = 2
SHORT = dict(block_epochs=(3, 2, 2), net_epochs=(2, 2))  # enough steps for Adam and BN statistics to matter


def _load_reference_loop():
    spec = importlib.util.spec_from_file_location("reference_loop", ROOT / "benchmarks" / "reference_loop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    """An output folder holding the tiny CIFAR-10 teacher (trained here, in seconds)."""
    if not (DATA / "cifar10.npz").is_file():
        pytest.skip(f"real CIFAR-10 arrays not found at {DATA / 'cifar10.npz'}")
    root = tmp_path_factory.mktemp("engine_out")
    get_teacher("cifar10", "tiny", data_root=DATA, output_root=root, device="cpu")
    return root


@pytest.fixture(scope="module")
def settings(out_root):
    return [prepare("cifar10", SHOTS, seed, "tiny", data_root=DATA, output_root=out_root, device="cpu")
            for seed in (0, 1)]


def _fresh_parts(teacher, seed: int) -> GraftParts:
    return new_parts(teacher, student_spec(teacher.spec), seed)


def _sched(**kw):
    return replace(get_profile("tiny").graft_for("cifar10", method="netgraft_paper"), **kw)


def _assert_same_losses(a: dict, b: dict, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=0, err_msg=k)


# --------------------------------------------------------------------------- joint block stage
def test_joint_block_stage_equals_sequential(settings):
    s = settings[0]
    joint, seq = _fresh_parts(s.teacher, 0), _fresh_parts(s.teacher, 0)
    log_j = graft_blocks(s.teacher, joint, s.x, _sched(), SHOTS, seed=0, joint=True)
    log_s = graft_blocks(s.teacher, seq, s.x, _sched(), SHOTS, seed=0, joint=False)
    _assert_same_losses(log_j.losses, log_s.losses)
    assert [len(v) for v in log_j.losses.values()] == list(_sched().block_epochs)
    for (name, a), b in zip(joint.state_dict().items(), seq.state_dict().values()):
        assert torch.equal(a, b), name


def test_block_images_lengthens_the_block_stage_alike_in_both_engines(settings):
    """With `block_images`, a block trains until it has seen that many images (here 5 epochs of 2)."""
    s = settings[0]
    sched = _sched(block_epochs=(2,), block_images=5 * len(s.x))
    log = graft_blocks(s.teacher, _fresh_parts(s.teacher, 0), s.x, sched, SHOTS, seed=0)
    assert [len(v) for v in log.losses.values()] == [5] * len(log.losses)
    stacked = LoopedParts([_fresh_parts(s.teacher, 0)])
    (log_b,) = graft_blocks_stacked(s.teacher, stacked, s.x[None], sched, SHOTS, [0])
    assert [len(v) for v in log_b.losses.values()] == [5] * len(log.losses)


# --------------------------------------------------------------------------- teacher passes
def _count_teacher_passes(teacher):
    """Calls of the teacher's first block: every full (or prefix) teacher pass starts there."""
    calls = []
    handle = teacher.blocks[0].register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    return calls, handle


def test_teacher_runs_once_per_stage_without_augmentation(settings):
    s = settings[0]
    sched = _sched(augment=False, **SHORT)
    parts = _fresh_parts(s.teacher, 0)
    calls, handle = _count_teacher_passes(s.teacher)
    try:
        graft_blocks(s.teacher, parts, s.x, sched, SHOTS, seed=0)
        assert calls == [len(s.x)], "block stage: one teacher pass over the whole few-shot set, then none"
        graft_net(s.teacher, parts, s.x, sched, SHOTS, seed=0)
        assert calls == [len(s.x)] * 2, "net stage: one more pass, none per step"
    finally:
        handle.remove()


def test_teacher_runs_once_per_augmented_batch(settings):
    s = settings[0]
    sched = _sched(**SHORT)
    assert sched.augment
    batches_per_epoch = -(-len(s.x) // sched.batch_size(SHOTS, 10))
    calls, handle = _count_teacher_passes(s.teacher)
    try:
        graft_blocks(s.teacher, _fresh_parts(s.teacher, 0), s.x, sched, SHOTS, seed=0)
    finally:
        handle.remove()
    # The joint stage runs max(block_epochs) epochs with one teacher pass per batch for all blocks.
    assert len(calls) == max(sched.block_epochs) * batches_per_epoch
    assert sum(calls) == max(sched.block_epochs) * len(s.x)


# --------------------------------------------------------------------------- batched seeds
def _teacher_is_batch_invariant(teacher, x) -> bool:
    """Whether one teacher pass over two batches equals two passes, bit for bit (true of oneDNN here)."""
    with torch.no_grad():
        return torch.equal(teacher(x), torch.cat([teacher(x[: len(x) // 3]), teacher(x[len(x) // 3 :])]))


def _train_both(settings, sched, stack_cls):
    teacher, seeds = settings[0].teacher, [s.seed for s in settings]
    singles = [_fresh_parts(teacher, seed) for seed in seeds]
    together = stack_cls([copy.deepcopy(p) for p in singles])
    logs_single = [(graft_blocks(teacher, p, s.x, sched, SHOTS, s.seed), graft_net(teacher, p, s.x, sched, SHOTS, s.seed))
                   for p, s in zip(singles, settings)]
    xs = torch.stack([s.x for s in settings])
    logs_b = graft_blocks_stacked(teacher, together, xs, sched, SHOTS, seeds)
    logs_n = graft_net_stacked(teacher, together, xs, sched, SHOTS, seeds)
    return singles, together.unstack(), logs_single, logs_b, logs_n


@pytest.mark.parametrize("augment", [True, False])
def test_looped_seeds_are_the_single_runs_bit_for_bit(settings, augment):
    if not _teacher_is_batch_invariant(settings[0].teacher, torch.cat([s.x for s in settings])):
        pytest.skip("this CPU's convolutions depend on the batch composition: only the vmap tolerance test applies")
    singles, looped, logs_single, logs_b, logs_n = _train_both(settings, _sched(augment=augment, **SHORT), LoopedParts)
    for k, (single, batched) in enumerate(zip(singles, looped)):
        _assert_same_losses(logs_single[k][0].losses, logs_b[k].losses)
        _assert_same_losses(logs_single[k][1].losses, logs_n[k].losses)
        for (name, a), b in zip(single.state_dict().items(), batched.state_dict().values()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("augment", [True, False])
def test_vmapped_seeds_equal_single_runs_over_their_first_steps(settings, augment):
    """vmap runs grouped convolutions, so it equals the single runs only up to float rounding, which Adam can
    amplify (a parameter whose true gradient is zero moves by +-lr on rounding noise alone). So: one step per
    epoch (the batch holds all 20 images), three steps in all, and compare what is determined at that point:
    the losses (computed before each step) and the hybrid's outputs after the last step."""
    sched = _sched(augment=augment, block_epochs=(1,), net_epochs=(1,), batch_per_shot=10.0)
    assert sched.batch_size(SHOTS, 10) == len(settings[0].x)
    singles, stacked, logs_single, logs_b, logs_n = _train_both(settings, sched, StackedParts)
    teacher, x_eval = settings[0].teacher, settings[0].x_test[:200]
    for k, (single, batched) in enumerate(zip(singles, stacked)):
        _assert_same_losses(logs_single[k][0].losses, logs_b[k].losses, rtol=1e-5)
        _assert_same_losses(logs_single[k][1].losses, logs_n[k].losses, rtol=1e-5)
        with torch.no_grad():
            a = Grafted(teacher, single, single.first, 5).eval()(x_eval)
            b = Grafted(teacher, batched, batched.first, 5).eval()(x_eval)
        # Three Adam steps of at most lr each on every parameter bound how far the two can drift apart.
        torch.testing.assert_close(b, a, atol=1e-3 * float(a.abs().max()), rtol=0)
        assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98


TIMING_KEYS = {"wall_s", "train_s", "init_s", "block_stage_s", "net_stage_s", "batched_seeds", "batched_wall_s",
               "torch_threads", "finished_at"}


def test_graft_seeds_fills_run_netgraft_cache(out_root, settings, tmp_path):
    seeds = [0, 1]
    batched = graft_seeds("cifar10", SHOTS, seeds, "tiny", data_root=DATA, output_root=out_root, device="cpu",
                          method="netgraft_paper", **SHORT)
    # The same call of run_netgraft finds the entry graft_seeds wrote, and trains nothing.
    for seed, m in zip(seeds, batched):
        assert run_netgraft("cifar10", SHOTS, seed, "tiny", data_root=DATA, output_root=out_root, device="cpu",
                            method="netgraft_paper", **SHORT) == m
        assert m["fold_same_predictions"] and m["batched_seeds"] == seeds
    # Separate folders (same teacher): the seeds one by one, and the vmap students.
    teacher_dir = Entry(out_root, "teacher", teacher_config("cifar10", "tiny")).dir
    roots = {name: tmp_path / name for name in ("single", "vmap")}
    for root in roots.values():
        shutil.copytree(teacher_dir, Entry(root, "teacher", teacher_config("cifar10", "tiny")).dir)
    vmapped = graft_seeds("cifar10", SHOTS, seeds, "tiny", data_root=DATA, output_root=roots["vmap"], device="cpu",
                          stack="vmap", method="netgraft_paper", **SHORT)
    exact = _teacher_is_batch_invariant(settings[0].teacher, torch.cat([s.x for s in settings]))
    for seed, b, v in zip(seeds, batched, vmapped):
        a = run_netgraft("cifar10", SHOTS, seed, "tiny", data_root=DATA, output_root=roots["single"], device="cpu",
                         method="netgraft_paper", **SHORT)
        assert set(a) == set(b) == set(v)
        assert a["cache_key"] == b["cache_key"] == v["cache_key"]
        if exact:  # the looped students and the shared-boundary scores reproduce run_netgraft exactly
            assert {k: x for k, x in a.items() if k not in TIMING_KEYS} == \
                   {k: x for k, x in b.items() if k not in TIMING_KEYS}
        # vmap: the first epoch's losses agree to rounding; later ones drift as Adam amplifies it.
        for key in ("block_losses", "net_losses"):
            _assert_same_losses({u: c[:1] for u, c in a[key].items()}, {u: c[:1] for u, c in v[key].items()}, 1e-5)
            _assert_same_losses(a[key], v[key], rtol=5e-2)
        for key in ("test_accuracy", "val_accuracy", "test_agreement"):  # 500 test / 200 val images
            assert abs(a[key] - v[key]) <= 1.0, key
        for unit in a["blocks"]:
            assert abs(a["blocks"][unit]["test_accuracy"] - v["blocks"][unit]["test_accuracy"]) <= 1.0, unit


def test_graft_seeds_rejects_bad_seeds(out_root):
    with pytest.raises(ValueError, match="distinct"):
        graft_seeds("cifar10", SHOTS, [3, 3], "tiny", data_root=DATA, output_root=out_root)
    with pytest.raises(ValueError, match="non-empty"):
        graft_seeds("cifar10", SHOTS, [], "tiny", data_root=DATA, output_root=out_root)


# --------------------------------------------------------------------------- the benchmark's reference loop
def test_reference_loop_first_step_loss_matches_engine(settings):
    ref = _load_reference_loop()
    s, sched = settings[0], _sched()
    parts = _fresh_parts(s.teacher, 0).train()
    xb = s.x[:16]
    acts = TeacherCache(s.teacher, [(xb, 0)], parts.positions, _sched()).get(None, xb)
    for i in parts.positions:
        g = Grafted(s.teacher, parts, i, i).train()
        engine = graft_loss(g.from_boundary(acts[i]), acts["logits"], sched.loss, sched.temperature)
        torch.testing.assert_close(ref.reference_loss(s.teacher, g, xb, sched), engine, atol=0, rtol=0)


def test_reference_loop_trains_like_the_engine(settings):
    ref = _load_reference_loop()
    s, sched = settings[0], _sched(**SHORT)
    a, b = _fresh_parts(s.teacher, 0), _fresh_parts(s.teacher, 0)
    log = ref.reference_netgraft(s.teacher, a, s.x, sched, SHOTS, 0, s.x_test, s.y_test, test_every=2)
    engine = {**graft_blocks(s.teacher, b, s.x, sched, SHOTS, 0).losses, **graft_net(s.teacher, b, s.x, sched, SHOTS, 0).losses}
    _assert_same_losses(log.losses, engine)
    n_epochs = sum(SHORT["block_epochs"]) + sum(SHORT["net_epochs"])
    units = list(SHORT["block_epochs"]) + list(SHORT["net_epochs"])
    scored = sum(len({e for e in range(n) if (e + 1) % 2 == 0 or e == n - 1}) for n in units)
    assert log.epochs == n_epochs and log.test_passes == scored
    assert [e for e, _ in log.test_accuracy["block4"]] == [2, 3]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # the same modules on the same batches: the same numbers
