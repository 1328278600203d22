"""Data-free distillation: exact one-stage gradients with a train-mode BatchNorm student, DFAD's normalising
generator, the student's frozen teacher blocks, the synthetic scores, and a tiny run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nbgraft.zeroshot import dfad as DF
from nbgraft.zeroshot import gan as G
from nbgraft.zeroshot import onestage as O
from nbgraft.models import build
from nbgraft.models.vgg import teacher_spec


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    teacher = build(teacher_spec(10, width=0.0625, batch_norm=True))
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return teacher.eval()


@pytest.mark.parametrize("normalise", [True, False])
def test_datafree_one_stage_gradients_equal_two_stage_with_train_mode_batchnorm(normalise):
    """-1 is exact for the whole-batch loss, so the student keeps BatchNorm in train mode."""
    teacher = _teacher().double()
    student, first = DF.book_student(teacher)
    game = DF.DatafreeGame(G.Generator(16, 4, normalise=normalise).double(), student.double(), teacher, first)
    assert any(isinstance(m, nn.BatchNorm2d) and m.training for m in student.blocks[first:].modules())
    gaps = O.gradient_gap(game, {"z": torch.randn(8, 16, dtype=torch.float64)})
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] < 1e-10, gaps
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())


def test_normalising_generator_reaches_the_teacher_with_unit_channel_std():
    """DFAD's generator ends with BatchNorm(affine=False); the DCGAN one's images are near-flat in the
    teacher's input space (per-channel std ~0.3 where real CIFAR-10 has ~1)."""
    torch.manual_seed(0)
    z = torch.randn(256, 32)
    x = G.Generator(32, 8, normalise=True)(z)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2, rtol=0)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    assert x.mean(dim=(1, 2, 3)).std() > 0.02  # images still differ in mean brightness
    plain = G.to_teacher_input(G.Generator(32, 8)(z))
    assert plain.std(dim=(0, 2, 3)).max() < 0.6
    teacher = _teacher()
    student, first = DF.book_student(teacher)
    assert DF.DatafreeGame(G.Generator(32, 8, normalise=True), student, teacher, first).inputs(x) is x


def test_student_keeps_the_teachers_first_blocks_frozen():
    teacher = _teacher()
    student, first = DF.book_student(teacher)
    assert first == 3
    for s_block, t_block in zip(student.blocks[:first], teacher.blocks[:first]):
        for ps, pt in zip(s_block.parameters(), t_block.parameters()):
            assert not ps.requires_grad and torch.equal(ps, pt)
    sched = DF.DatafreeSchedule(width=4, z_dim=16, batch_size=8, student_steps=2)
    m = DF.build_datafree(sched, teacher, 0, torch.device("cpu"))
    before = [p.clone() for p in m.game.student.parameters()]
    noise = O.Noise(16, 8, 1, torch.device("cpu"))
    for scheme in ("two_stage", "one_stage"):
        batch, extra = noise.iteration(sched.student_steps)
        O.train_step(m.game, scheme, m.opt_d, m.opt_g, batch, extra)
    after = list(m.game.student.parameters())
    n_prefix = sum(1 for _ in m.game.student.blocks[:first].parameters())
    assert all(torch.equal(a, b) for a, b in zip(before[:n_prefix], after[:n_prefix]))
    assert any(not torch.equal(a, b) for a, b in zip(before[n_prefix:], after[n_prefix:]))
    assert all(p.requires_grad for p in m.game.student.blocks[first:].parameters())
    # at test time the student runs whole, its prefix the teacher's (eval mode): what the game computes
    x = torch.randn(4, 3, 32, 32)
    m.game.student.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.game.student(x), m.game.student.run(teacher.run(x, 0, first), first, 6))


def test_synthetic_scores_count_classes_and_agreement():
    teacher = _teacher()
    x = torch.randn(50, 3, 32, 32)
    same = DF.synthetic_scores(teacher, teacher, x)
    assert same["synthetic_agreement"] == 100 and 1 <= same["synthetic_classes"] <= 10
    assert 0 <= same["synthetic_entropy"] <= 1
    student, _ = DF.book_student(teacher)
    other = DF.synthetic_scores(teacher, student, x)
    assert 0 <= other["synthetic_agreement"] <= 100 and other["synthetic_classes"] == same["synthetic_classes"]


def test_tiny_datafree_run_trains_and_caches(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    df = DF.run_datafree("one_stage", "tiny", **kw)
    sched = DF.datafree_schedule("tiny")
    assert df["real_images"] == 0 and 0 <= df["test_accuracy"] <= 100
    assert 0 <= df["synthetic_agreement"] <= 100 and df["first_own_block"] == 3
    assert df["at_two_stage_iterations"]["iteration"] <= sched.iterations
    assert all("synthetic_agreement" in c for c in df["checkpoints"])
    assert G.load_samples(df, tiny_outputs).shape == (64, 3, 32, 32)
    assert DF.run_datafree("one_stage", "tiny", **kw) == df  # cached


def test_own_blocks_on_shared_features_score_like_the_whole_student():
    teacher = _teacher()
    student, first = DF.book_student(teacher)
    x = torch.randn(10, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(DF.OwnBlocks(student, first)(DF.shared_features(teacher, x, first, 4)), student(x))
