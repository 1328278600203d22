"""Grafting any BlockNet: CIFAR ResNets, a toy network, teacher-initialised students, the published weights."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nbgraft import grafting as G
from nbgraft.methods import METHODS
from nbgraft.grafting import new_parts
from nbgraft.models import BlockNet, build, load_state, student_net
from nbgraft.models import resnet as R
from nbgraft.models import vgg as V
from nbgraft.models.inherit import inherit
from nbgraft.profiles import get_profile
from nbgraft.schedules import BaselineSchedule, GraftSchedule
from helpers import identity_map, randomise_bn

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO.parent / "shared" / "teachers" / "resnet56-4bfd9763.th"


def _float_tol(reference: torch.Tensor, depth: int) -> float:
    """A tolerance for float32 results computed by two routes: a few ulps of the largest logit per layer."""
    return float(reference.abs().max()) * torch.finfo(torch.float32).eps * 64 * depth


# --------------------------------------------------------------------------- ResNet
def test_resnet_grafting_its_own_units_reproduces_its_logits_and_folds_exactly():
    torch.manual_seed(0)
    spec = R.teacher_spec(20)
    teacher = randomise_bn(build(spec))
    x = torch.randn(6, 3, 32, 32)
    first = 4  # stage 2 on
    blocks = [copy.deepcopy(teacher.blocks[i]) for i in range(first, len(teacher))]
    widths = teacher.widths[first:]
    parts = G.GraftParts(first, blocks, [identity_map(widths[j]) for j in range(len(blocks))],
                         [identity_map(widths[j + 1]) if j + 1 < len(blocks) else nn.Identity()
                          for j in range(len(blocks))], widths).eval()
    with torch.no_grad():
        want = teacher(x)
        for a in parts.positions:
            for b in range(a, len(teacher)):
                assert torch.equal(G.Grafted(teacher, parts, a, b).eval()(x), want), (a, b)
        student = G.export_student(teacher, parts, folded=True)
        torch.testing.assert_close(student(x), want, rtol=0, atol=_float_tol(want, len(teacher)))


def test_resnet_student_exports_as_a_plain_module_that_reloads(tmp_path):
    torch.manual_seed(1)
    t_spec = R.teacher_spec(20)
    teacher = randomise_bn(build(t_spec))
    s_spec = R.student_spec(t_spec)  # the default: stage 3 thinned inside, the streams kept
    assert s_spec.widths == (16, 32, 64) and s_spec.mids == (16, 32, 28) and not s_spec.batch_norm
    parts = new_parts(teacher, s_spec, seed=0)
    student = G.export_student(teacher, parts)
    assert not any(isinstance(m, nn.BatchNorm2d) for b in student.blocks[parts.first:] for m in b.modules())
    torch.save(student.state_dict(), tmp_path / "student.pt")
    again = G.export_student(build(t_spec, init=False), new_parts(build(t_spec, init=False), s_spec, seed=5))
    again.load_state_dict(torch.load(tmp_path / "student.pt", weights_only=True))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), student(x))
        unfolded = G.export_student(teacher, parts, folded=False)
        # No adapter pair to merge (the streams keep the teacher's widths): the two exports are one network,
        # which is why a run scores only one of them on the test set.
        assert not G.folds_adapters(parts) and torch.equal(unfolded(x), student(x))
        chain = G.Grafted(teacher, parts, parts.first, len(teacher) - 1).eval()(x)
        torch.testing.assert_close(unfolded(x), chain, rtol=0, atol=_float_tol(chain, 12))
    assert sum(p.numel() for p in student.parameters()) < 0.6 * sum(p.numel() for p in teacher.parameters())


def test_resnet_shortcut_rules():
    block = R.BasicBlock(32, 32, 2, batch_norm=False, shortcut="conv")
    assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.stride == (2, 2)
    assert isinstance(R.BasicBlock(16, 32, 2, True, "A").shortcut, R.OptionA)
    assert isinstance(R.BasicBlock(32, 32, 1, True, "A").shortcut, nn.Identity)
    with pytest.raises(ValueError, match="option A"):
        R.BasicBlock(32, 48 + 1, 2, True, "A")
    with pytest.raises(ValueError, match="6n \\+ 2"):
        R.teacher_spec(21)
    assert [len(u) for u in build(R.teacher_spec(32)).blocks[1:4]] == [2, 2, 1]


# --------------------------------------------------------------------------- starting from the teacher
@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_teacher_init_with_every_channel_is_the_teacher(family):
    torch.manual_seed(2)
    if family == "vgg":
        t_spec = V.teacher_spec(10, width=0.125, batch_norm=True)
        s_spec = V.student_spec(t_spec, widths=t_spec.widths)
        first = 3
    else:
        t_spec = R.teacher_spec(20)
        s_spec = R.student_spec(t_spec, widths=t_spec.widths)
        first = 7
    teacher = randomise_bn(build(t_spec))
    x = torch.randn(16, 3, 32, 32)
    blocks = [V.build_block(s_spec, i) if family == "vgg" else R.build_unit(s_spec, i) for i in range(first, len(teacher))]
    widths = teacher.widths[first:]
    parts = G.GraftParts.around(teacher.widths, first, blocks, widths)
    parts.set_adapter_maps(inherit(teacher, first, parts.blocks, widths, x))
    assert all(isinstance(m, nn.Identity) for m in [*parts.t2s, *parts.s2t])  # same widths: no adapter
    with torch.no_grad():
        want = teacher(x)
        for i in parts.positions:
            got = G.Grafted(teacher, parts, i, i).eval()(x)
            torch.testing.assert_close(got, want, rtol=0, atol=_float_tol(want, len(teacher)))
        got = G.Grafted(teacher, parts, first, len(teacher) - 1).eval()(x)
        torch.testing.assert_close(got, want, rtol=0, atol=_float_tol(want, len(teacher)))


@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_teacher_init_with_half_the_channels_starts_as_the_pruned_teacher_and_folds_exactly(family):
    torch.manual_seed(3)
    t_spec = V.teacher_spec(10, width=0.125, batch_norm=True) if family == "vgg" else R.teacher_spec(20)
    teacher = randomise_bn(build(t_spec))
    # VGG: blocks 4 and 5 at half width; ResNet: stage 3's stream at half width (adapters around every unit).
    s_spec = V.student_spec(t_spec) if family == "vgg" else R.student_spec(t_spec, widths=(16, 32, 32))
    x = torch.randn(32, 3, 32, 32)
    parts = new_parts(teacher, s_spec, seed=0, init="teacher", x=x)
    # The adapters are selections/embeddings of teacher channels: 0/1 matrices, one 1 per student channel.
    for m in [*parts.t2s, *parts.s2t]:
        if isinstance(m, G.ChannelMap):
            w = m.weight if m.out_channels < m.in_channels else m.weight.T
            assert set(w.unique().tolist()) <= {0.0, 1.0} and (w.sum(1) == 1).all()
    folded, unfolded = G.export_student(teacher, parts, True), G.export_student(teacher, parts, False)
    with torch.no_grad():
        chain = G.Grafted(teacher, parts, parts.first, len(teacher) - 1).eval()(x)
        torch.testing.assert_close(unfolded(x), chain, rtol=0, atol=_float_tol(chain, len(teacher)))
        torch.testing.assert_close(folded(x), chain, rtol=0, atol=_float_tol(chain, len(teacher)))
    # fit=True: the exit maps rebuild the teacher's activations at least as well as the embedding does.
    fitted = new_parts(teacher, s_spec, seed=0, init="teacher_fit", x=x)
    for j, i in enumerate(parts.positions[:-1]):
        with torch.no_grad():
            h = teacher.run(x, 0, i)
            want = teacher.blocks[i](h)
            err = [(G.Grafted(teacher, p, i, i).eval().scion(h) - want).pow(2).mean() for p in (parts, fitted)]
        assert err[1] <= err[0] + 1e-6, (i, err)


def test_vgg_max_pool_gives_pytorchs_values_gradients_and_strides():
    """The channels-last pooling is a speed-up only: the same outputs, the same gradients (ties included: a
    ReLU's zeros, equal positive values) and the usual strides, also for (B, C, 1, 1) maps whose contiguous()
    would keep channels-last strides and steer later convolutions to other kernels."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(6, 5, 8, 8), (3, 4, 2, 2), (2, 3, 7, 6)]:
        x = torch.relu(torch.randn(shape, generator=gen))
        x[:, :, ::3, ::2] = 0.5
        grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=gen)
        outs = []
        for pool in (nn.MaxPool2d(2), V.MaxPool(2)):
            xi = x.clone().requires_grad_()
            y = pool(xi)
            y.backward(grad)
            outs.append((y, xi.grad))
            with torch.no_grad():
                assert torch.equal(pool(x), y)
        (y0, g0), (y1, g1) = outs
        assert torch.equal(y0, y1) and torch.equal(g0, g1), shape
        assert y1.stride() == y0.stride() and g1.stride() == g0.stride(), shape


def test_grafted_train_sets_the_scion_and_keeps_the_teacher_in_eval():
    prof = get_profile("tiny")
    teacher = build(V.teacher_spec(10, prof.width, prof.batch_norm)).train()
    parts = new_parts(teacher, V.student_spec(teacher.spec), seed=0)
    g = G.Grafted(teacher, parts, parts.first, len(teacher) - 1).train()
    assert g.training and all(m.training for m in g.scion.modules())
    assert not any(m.training for m in teacher.modules())
    g.eval()
    assert not g.training and not any(m.training for m in g.scion.modules())


def test_default_vgg_student_has_no_batchnorm():
    prof = get_profile("cpu")
    t_spec = V.teacher_spec(10, prof.width, prof.batch_norm)
    teacher = build(t_spec)
    s_spec = V.student_spec(t_spec)
    parts = new_parts(teacher, s_spec, seed=0)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in parts.modules())
    student = G.export_student(teacher, parts)
    own = [m for b in student.blocks[parts.first:] for m in b.modules()]
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in own)
    assert [type(m).__name__ for m in parts.blocks[-1]] == ["Flatten", "Linear", "Linear"]  # the paper's classifier


@pytest.mark.parametrize("shots", [1, 10])
def test_paper_net_stage_optimiser_is_the_official_one(shots):
    prof = get_profile("paper")
    t_spec = V.teacher_spec(10, prof.width, prof.batch_norm)
    parts = new_parts(build(t_spec), V.student_spec(t_spec), seed=0)
    for ds in ("cifar10", "cifar100"):
        sched = prof.graft_for(ds, method="netgraft_paper")
        for a, b, _ in G.net_steps(parts, sched):
            opt = G.net_optimizer(parts, a, b, sched, shots)
            assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-4]  # blocks, adapters: Adam 1e-4, every N
            chain = {id(p) for p in G.Grafted(build(t_spec), parts, a, b).scion.parameters()}
            assert {id(p) for g in opt.param_groups for p in g["params"]} == chain
        block = G.block_optimizer(parts, 0, sched, shots)
        factor = shots / 10
        assert [g["lr"] for g in block.param_groups] == pytest.approx(
            [sched.block_lr[0] * factor, sched.block_adapter_lr * factor])


@pytest.mark.parametrize("kind", ["kd_inherited", "scratch_inherited"])
def test_inherited_baselines_never_touch_the_inherited_blocks(kind):
    torch.manual_seed(4)
    t_spec = V.teacher_spec(10, width=0.125, batch_norm=True)
    teacher = randomise_bn(build(t_spec))
    x, y = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    model, log = METHODS[kind].train(teacher, V.student_spec(t_spec), x, y,
                                     BaselineSchedule(steps=5, batch_size=8, views=2), seed=0)
    first = log["first_trained_block"]
    assert first == 3
    for i in range(first):
        for (name, a), b in zip(model.blocks[i].state_dict().items(), teacher.blocks[i].state_dict().values()):
            assert torch.equal(a, b), (i, name)
    own = torch.cat([p.flatten() for p in model.blocks[first:].parameters()])
    fresh, _ = student_net(teacher, V.student_spec(t_spec), inherit_prefix=True)
    assert not torch.equal(own, torch.cat([p.flatten() for p in fresh.blocks[first:].parameters()]))


# --------------------------------------------------------------------------- any network
class _Toy(nn.Module):
    """A two-block network of no family: an MLP on 12-d vectors."""

    def __init__(self, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 5)


def test_a_toy_network_of_no_family_goes_through_both_stages():
    torch.manual_seed(5)
    toy = _Toy(32)
    teacher = BlockNet([toy.body, toy.head], widths=[12, 32, 5]).eval().requires_grad_(False)
    student_blocks = [nn.Sequential(nn.Linear(12, 8), nn.ReLU()), nn.Linear(8, 5)]
    parts = G.GraftParts.around(teacher.widths, 0, student_blocks, [12, 8, 5])
    x = torch.randn(40, 12)
    sched = GraftSchedule(block_epochs=(30,), net_epochs=(30,), block_lr=(1e-2,), block_adapter_lr=1e-2,
                          net_lr=1e-2, net_adapter_lr=1e-2, augment=False, scale_lr_with_shots=False)
    with torch.no_grad():
        before = G.graft_loss(G.Grafted(teacher, parts, 0, 1)(x), teacher(x)).item()
    student, block_log, net_log = G.netgraft(teacher, parts, x, sched, shots=8)
    assert set(block_log.losses) == {"block1", "block2"} and set(net_log.losses) == {"chain1-2"}
    with torch.no_grad():
        after = G.graft_loss(student(x), teacher(x)).item()
        torch.testing.assert_close(student(x), G.Grafted(teacher, parts, 0, 1).eval()(x), rtol=1e-5, atol=1e-5)
    assert after < 0.5 * before
    assert student.widths == (12, 8, 5)
    with pytest.raises(ValueError, match="inherit_block"):
        inherit(teacher, 0, student_blocks, [12, 8, 5], x)


def test_bad_graft_shapes_say_what_is_wrong():
    with pytest.raises(ValueError, match="do not end at the teacher's last block"):
        G.GraftParts.around([3, 8, 8, 10], 1, [nn.Identity()], [8, 10])
    with pytest.raises(ValueError, match="predicts 7 classes"):
        G.GraftParts.around([3, 8, 10], 1, [nn.Identity()], [8, 7])
    with pytest.raises(ValueError, match="boundary widths"):
        BlockNet([nn.Identity()], [3])


# --------------------------------------------------------------------------- the published weights
def test_published_loader_rejects_wrong_files(tmp_path):
    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    truncated = tmp_path / "resnet56-4bfd9763.th"
    truncated.write_bytes(PUBLISHED.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="truncated, damaged or another network"):
        R.load_published("resnet56", truncated)
    with pytest.raises(FileNotFoundError, match="resnet56-4bfd9763.th"):
        R.load_published("resnet56", tmp_path / "nowhere.th")
    with pytest.raises(ValueError, match="no published weights named"):
        R.load_published("resnet18", PUBLISHED)
    # Right file, wrong architecture: a ResNet-20 cannot take ResNet-56 weights.
    raw = torch.load(PUBLISHED, map_location="cpu", weights_only=True)["state_dict"]
    with pytest.raises(ValueError, match="which a ResNet-20 does not"):
        R.published_state(R.teacher_spec(20), raw)
    small = build(R.teacher_spec(20))
    with pytest.raises(ValueError, match="does not fit this architecture"):
        load_state(small, build(R.teacher_spec(32)).state_dict(), "checkpoint x")


@pytest.mark.slow
def test_published_resnet56_reaches_its_accuracy(data_root):
    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    from nbgraft import data as D
    from nbgraft.evaluate import predict

    net = R.load_published("resnet56", PUBLISHED)
    data = D.load_dataset("cifar10", data_root)
    x = D.to_tensor(data.x_test, "cifar10", "cpu", net.spec.mean, net.spec.std)
    acc = (predict(net, x).argmax(1) == torch.from_numpy(data.y_test)).float().mean().item() * 100
    assert acc == pytest.approx(93.39, abs=0.005)


def test_copy_of_published_file_is_found_through_the_environment(tmp_path, monkeypatch):
    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    from nbgraft.runs.teacher import teachers_root

    shutil.copy(PUBLISHED, tmp_path / PUBLISHED.name)
    monkeypatch.setenv("NBGRAFT_TEACHERS", str(tmp_path))
    assert teachers_root() == [tmp_path]


@pytest.mark.slow
def test_the_readme_bring_your_own_example_runs_as_written(tmp_path):
    """The README's "Bring your own teacher" code block, executed as written from the repository root."""
    import re
    import runpy

    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Bring your own teacher"):readme.index("## Profiles")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    script = tmp_path / "byo.py"
    script.write_text(code)
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        out = runpy.run_path(str(script))
    finally:
        os.chdir(cwd)
    student, teacher = out["student"], out["teacher"]
    assert len(student) == len(teacher) and sum(p.numel() for p in student.parameters()) < \
        sum(p.numel() for p in teacher.parameters())
    losses = [v for log in (out["block_log"], out["net_log"]) for vs in log.losses.values() for v in vs]
    assert losses and all(np.isfinite(losses))


def test_checkpoints_of_any_depth_load_and_say_what_they_are(tmp_path):
    """A CIFAR ResNet checkpoint of another depth, saved without `num_batches_tracked` and with the `module.`
    prefix (the published format), loads through load_teacher; a wrong arch names the depth the file holds."""
    from nbgraft import load_teacher

    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    raw = torch.load(PUBLISHED, map_location="cpu", weights_only=True)["state_dict"]
    # a ResNet-20 in the published format: the ResNet-56's stem, first three blocks per stage and head
    small = {k: v for k, v in raw.items() if not k.startswith("module.layer") or int(k.split(".")[2]) < 3}
    path = tmp_path / "resnet20.th"
    torch.save({"state_dict": small}, path)
    teacher = load_teacher(path, arch="resnet20")
    assert teacher.spec.depth == 20 and len(teacher) == 11 and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        assert teacher(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="holds a ResNet-20 .* use arch resnet20"):
        load_teacher(path, arch="resnet56")
    with pytest.raises(ValueError, match="has md5"):
        load_teacher(path, arch="resnet20", md5="0" * 32)
    with pytest.raises(ValueError, match="unknown arch 'vgg11'"):
        load_teacher(path, arch="vgg11")


def test_netgraft_honours_the_schedules_init_or_refuses_what_it_cannot_do():
    """`init="teacher"` in the schedule starts the parts from the teacher inside netgraft (it was silently
    ignored); validation curves need the runs layer's pool and are refused."""
    from dataclasses import replace

    from nbgraft import netgraft
    from nbgraft.grafting import export_student

    torch.manual_seed(0)
    t_spec = V.teacher_spec(10, width=0.125, batch_norm=True)
    teacher = randomise_bn(build(t_spec)).eval()
    x = torch.randn(20, 3, 32, 32)
    sched = GraftSchedule(block_epochs=(0,), net_epochs=(0,), init="teacher")
    student, _, _ = netgraft(teacher, new_parts(teacher, V.student_spec(t_spec), seed=0), x, sched, shots=2)
    started = export_student(teacher, new_parts(teacher, V.student_spec(t_spec), seed=0, init="teacher", x=x))
    for a, b in zip(student.state_dict().values(), started.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="val_every=0"):
        netgraft(teacher, new_parts(teacher, V.student_spec(t_spec), seed=0), x, replace(sched, val_every=5), shots=2)
