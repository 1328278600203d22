"""The DCGAN of chapter 7: its quality score, its input conversions, and a tiny run that trains and caches."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nbgraft.zeroshot import gan as G
from nbgraft.zeroshot import onestage as O
from nbgraft.models import build
from nbgraft.models.vgg import teacher_spec
from nbgraft.profiles import get_profile


def test_frechet_distance_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    mu = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    b = a * 2 + mu  # sample mean 2m + mu, sample covariance exactly 4S for a's m, S
    # FD = |m - (2m + mu)|^2 + Tr(S + 4S - 2 (S 4S)^1/2) = |m + mu|^2 + Tr(S)
    expected = (a.mean(0) + mu).square().sum().item() + torch.trace(torch.cov(a.T)).item()
    assert G.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert G.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="feature rows"):
        G.frechet_distance(a, b[:, :2])


def test_penultimate_features_feed_the_last_linear_layer():
    torch.manual_seed(0)
    teacher = build(teacher_spec(10, width=0.0625, batch_norm=True)).eval()
    x = torch.randn(6, 3, 32, 32)
    feats = G.penultimate_features(teacher, x, batch_size=4)
    assert feats.shape == (6, teacher.spec.hidden)
    with torch.no_grad():
        torch.testing.assert_close(teacher.blocks[5][-1](feats), teacher(x))


def test_pixels_and_teacher_space_round_trip():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    torch.testing.assert_close(G.to_pixels(G.to_teacher_input(x)), x)
    assert G.tanh_pixels_to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]


def test_bad_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        G.GanGame(G.Generator(4, 2), G.Discriminator(2), "hinge")
    with pytest.raises(ValueError, match="two_stage"):
        G.run_gan("three_stage", "tiny")
    with pytest.raises(ValueError, match="no GAN schedule"):
        G.gan_schedule(replace(get_profile("tiny"), name="other"))


def test_tiny_gan_runs_train_and_cache(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    two = G.run_gan("two_stage", "tiny", **kw)
    one = G.run_gan("one_stage", "tiny", **kw)
    sched = G.gan_schedule("tiny")
    assert two["iterations"] == sched.iterations
    assert one["budget_s"] == pytest.approx(two["train_s"])
    assert one["train_s"] >= two["train_s"] or one["iterations"] == sched.iterations * O.MAX_ITERATIONS_FACTOR
    for m in (one, two):
        assert all(len(m["losses"][k]) == m["iterations"] for k in ("d_loss", "g_loss"))
        assert m["frechet"] > 0 and m["frechet_real_vs_real"] >= 0
        assert G.load_samples(m, tiny_outputs).shape == (64, 3, 32, 32)
    # the generator moved: its samples' Frechet distance changed from the untrained one
    assert one["checkpoints"][0]["frechet"] != one["checkpoints"][-1]["frechet"]
    assert G.run_gan("one_stage", "tiny", **kw) == one  # cached
