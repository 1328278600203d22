"""One-stage adversarial training: the rescaled gradients equal the two-stage ones, and a tiny run trains."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from nbgraft import onestage as O
from nbgraft.models import build
from nbgraft.models.vgg import student_spec, teacher_spec
from nbgraft.profiles import get_profile


def _gan_batch(z_dim: int, n: int = 12) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"real": torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1,
            "z": torch.randn(n, z_dim, generator=g, dtype=torch.float64)}


def test_nonsaturating_factor_is_ratio_of_loss_derivatives():
    o = torch.linspace(-12, 12, 97, dtype=torch.float64, requires_grad=True)
    (d_fake,) = torch.autograd.grad(torch.nn.functional.softplus(o).mean(), o)  # L_D's fake term
    (d_gen,) = torch.autograd.grad(O.gan_g_loss(o, "nonsaturating"), o)
    torch.testing.assert_close(d_gen / d_fake, O.generator_factor(o, "nonsaturating").double(), rtol=1e-6, atol=0)
    (d_min,) = torch.autograd.grad(O.gan_g_loss(o, "minimax"), o)
    torch.testing.assert_close(d_min / d_fake, torch.full_like(o, O.generator_factor(o, "minimax")))


@pytest.mark.parametrize("loss", O.GAN_LOSSES)
def test_gan_one_stage_gradients_equal_two_stage(loss):
    torch.manual_seed(0)
    game = O.GanGame(O.Generator(16, 4).double(), O.Discriminator(4).double(), loss)
    gaps = O.gradient_gap(game, _gan_batch(16))
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] < 1e-10, gaps


def test_per_sample_factor_is_not_exact_with_batchnorm_in_the_discriminator():
    """The reason the discriminator has no BatchNorm: batch statistics couple the samples."""
    torch.manual_seed(0)
    game = O.GanGame(O.Generator(16, 4).double(), O.Discriminator(4, batch_norm=True).double(), "nonsaturating")
    gaps = O.gradient_gap(game, _gan_batch(16))
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] > 1e-3, gaps


def test_generator_stage_leaves_the_discriminator_without_gradients():
    torch.manual_seed(0)
    game = O.GanGame(O.Generator(16, 4), O.Discriminator(4))
    game.g_stage({"z2": torch.randn(4, 16)})
    assert all(p.grad is None for p in game.critic.parameters())
    assert all(p.grad is not None for p in game.gen.parameters())
    assert all(p.requires_grad for p in game.critic.parameters())


def test_datafree_one_stage_gradients_equal_two_stage_with_train_mode_batchnorm():
    """-1 is exact for the whole-batch loss, so the student keeps BatchNorm in train mode."""
    torch.manual_seed(0)
    t_spec = teacher_spec(10, width=0.0625, batch_norm=True)
    teacher = build(t_spec).double()
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    student = build(student_spec(t_spec, batch_norm=True)).double().train()
    game = O.DatafreeGame(O.Generator(16, 4).double(), student, teacher)
    assert any(isinstance(m, nn.BatchNorm2d) and m.training for m in student.modules())
    gaps = O.gradient_gap(game, {"z": torch.randn(8, 16, dtype=torch.float64)})
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] < 1e-10, gaps
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())


def test_frechet_distance_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    mu = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    b = a * 2 + mu  # sample mean 2m + mu, sample covariance exactly 4S for a's m, S
    # FD = |m - (2m + mu)|^2 + Tr(S + 4S - 2 (S 4S)^1/2) = |m + mu|^2 + Tr(S)
    expected = (a.mean(0) + mu).square().sum().item() + torch.trace(torch.cov(a.T)).item()
    assert O.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert O.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="feature rows"):
        O.frechet_distance(a, b[:, :2])


def test_penultimate_features_feed_the_last_linear_layer():
    torch.manual_seed(0)
    teacher = build(teacher_spec(10, width=0.0625, batch_norm=True)).eval()
    x = torch.randn(6, 3, 32, 32)
    feats = O.penultimate_features(teacher, x, batch_size=4)
    assert feats.shape == (6, teacher.spec.hidden)
    with torch.no_grad():
        torch.testing.assert_close(teacher.blocks[5][-1](feats), teacher(x))


def test_bad_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        O.GanGame(O.Generator(4, 2), O.Discriminator(2), "hinge")
    with pytest.raises(ValueError, match="two_stage"):
        O.run_gan("three_stage", "tiny")
    with pytest.raises(ValueError, match="no GAN schedule"):
        O.gan_schedule(replace(get_profile("tiny"), name="other"))


def test_tiny_one_stage_runs_train_and_cache(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    two = O.run_gan("two_stage", "tiny", **kw)
    one = O.run_gan("one_stage", "tiny", **kw)
    sched = O.gan_schedule("tiny")
    assert two["iterations"] == sched.iterations
    assert one["budget_s"] == pytest.approx(two["train_s"])
    assert one["train_s"] >= two["train_s"] or one["iterations"] == sched.iterations * O.MAX_ITERATIONS_FACTOR
    for m in (one, two):
        assert all(len(m["losses"][k]) == m["iterations"] for k in ("d_loss", "g_loss"))
        assert m["frechet"] > 0 and m["frechet_real_vs_real"] >= 0
        assert O.load_samples(m, tiny_outputs).shape == (64, 3, 32, 32)
    # the generator moved: its samples' Frechet distance changed from the untrained one
    assert one["checkpoints"][0]["frechet"] != one["checkpoints"][-1]["frechet"]
    assert O.run_gan("one_stage", "tiny", **kw) == one  # cached

    df = O.run_datafree("one_stage", "tiny", **kw)
    assert df["real_images"] == 0 and 0 <= df["test_accuracy"] <= 100
    assert df["at_two_stage_iterations"]["iteration"] <= O.datafree_schedule("tiny").iterations
    timing = O.time_schemes("datafree", "tiny", **kw)
    assert set(timing["median_s"]) == set(O.SCHEMES) and all(v > 0 for v in timing["median_s"].values())


def test_gradient_checks_on_the_profile_networks(data_root, tiny_outputs):
    rows = O.gradient_checks("tiny", data_root=data_root, output_root=tiny_outputs, batch_size=6)
    assert len(rows) == 4
    for r in rows:
        gap = max(r["discriminator"], r["generator"])
        assert (gap < 1e-10) if r["exact_in_theory"] else (r["generator"] > 1e-3), r
