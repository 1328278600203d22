"""One-stage adversarial training: the rescaled gradients equal the two-stage ones exactly where the derivation
says so (and not elsewhere), the schemes make the updates they claim, and the chapter's checks run."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nbgraft.zeroshot import gan as G
from nbgraft.zeroshot import onestage as O
from nbgraft.zeroshot.checks import GAN_CASES, gradient_checks, time_schemes


def _gan_batch(z_dim: int, n: int = 12) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"real": torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1,
            "z": torch.randn(n, z_dim, generator=g, dtype=torch.float64)}


def _gan(loss: str, batch_norm: bool = False, separate_passes: bool = False) -> G.GanGame:
    torch.manual_seed(0)
    return G.GanGame(G.Generator(16, 4).double(), G.Discriminator(4, batch_norm).double(), loss, separate_passes)


def test_nonsaturating_factor_is_ratio_of_loss_derivatives():
    o = torch.linspace(-12, 12, 97, dtype=torch.float64, requires_grad=True)
    (d_fake,) = torch.autograd.grad(torch.nn.functional.softplus(o).mean(), o)  # L_D's fake term
    (d_gen,) = torch.autograd.grad(O.gan_g_loss(o, "nonsaturating"), o)
    torch.testing.assert_close(d_gen / d_fake, O.generator_factor(o, "nonsaturating").double(), rtol=1e-6, atol=0)
    (d_min,) = torch.autograd.grad(O.gan_g_loss(o, "minimax"), o)
    torch.testing.assert_close(d_min / d_fake, torch.full_like(o, O.generator_factor(o, "minimax")))


@pytest.mark.parametrize("loss", O.GAN_LOSSES)
def test_gan_one_stage_gradients_equal_two_stage(loss):
    gaps = O.gradient_gap(_gan(loss), _gan_batch(16))
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] < 1e-10, gaps


def test_nonsaturating_factor_is_exact_and_needed_at_spread_logits(monkeypatch):
    """At init D's logits are ~0.01, where -exp(-o) is ~-1: spread them to |o| of a few units so that the
    per-sample factor matters, then check it is exact and that -1 in its place is far off."""
    game = _gan("nonsaturating")
    last, fake = game.disc[-2], game.gen(_gan_batch(16)["z"]).detach()
    with torch.no_grad():  # affine rescaling of the last layer: logits with std 2.5 around 0.5
        o = game.disc(fake)
        scale = 2.5 / o.std()
        last.weight.mul_(scale)
        last.bias.mul_(scale).sub_(o.mean() * scale - 0.5)
        o_fake = game.disc(fake)
    assert o_fake.std() > 1 and o_fake.abs().max() > 2 and o_fake.abs().max() < 20, o_fake
    exact = O.gradient_gap(game, _gan_batch(16))
    assert exact["discriminator"] < 1e-12 and exact["generator"] < 1e-10, exact
    monkeypatch.setattr(G, "generator_factor", lambda o, loss: -1.0)  # the mutant: the symmetric game's factor
    wrong = O.gradient_gap(game, _gan_batch(16))
    assert wrong["generator"] > 1e-2, wrong


def test_batchnorm_minimax_is_exact_with_separate_passes_only():
    """-1 is exact iff L_G is minus L_D's fake part over the batch D sees: real and fake apart, not together."""
    apart = O.gradient_gap(_gan("minimax", batch_norm=True, separate_passes=True), _gan_batch(16))
    assert apart["discriminator"] < 1e-12 and apart["generator"] < 1e-10, apart
    together = O.gradient_gap(_gan("minimax", batch_norm=True), _gan_batch(16))
    assert together["discriminator"] < 1e-12 and together["generator"] > 1e-3, together


def test_per_sample_factor_is_not_exact_with_batchnorm_even_with_separate_passes():
    """The reason the discriminator has no BatchNorm: batch statistics couple the fakes with each other."""
    gaps = O.gradient_gap(_gan("nonsaturating", batch_norm=True, separate_passes=True), _gan_batch(16))
    assert gaps["discriminator"] < 1e-12 and gaps["generator"] > 1e-3, gaps


def test_separate_passes_change_nothing_without_batchnorm():
    batch = _gan_batch(16)
    for loss in O.GAN_LOSSES:
        a, b = _gan(loss), _gan(loss, separate_passes=True)
        torch.testing.assert_close(a.one_stage(batch)["d_loss"], b.one_stage(batch)["d_loss"])


@pytest.mark.parametrize("freeze", [True, False])
def test_generator_stage_freezes_the_discriminator_or_not(freeze):
    torch.manual_seed(0)
    game = G.GanGame(G.Generator(16, 4), G.Discriminator(4))
    game.g_stage({"z2": torch.randn(4, 16)}, freeze=freeze)
    assert all((p.grad is None) == freeze for p in game.disc.parameters())
    assert all(p.grad is not None for p in game.gen.parameters())
    assert all(p.requires_grad for p in game.disc.parameters())


class _Counting(torch.optim.SGD):
    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


@pytest.mark.parametrize("scheme", O.SCHEMES)
def test_train_step_makes_every_extra_discriminator_step(scheme):
    """DFAD's ratio: every scheme makes len(extra) + 1 D updates and one G update per iteration."""
    game = _gan("nonsaturating")
    opt_d, opt_g = _Counting(game.disc.parameters()), _Counting(game.gen.parameters())
    batch = {**_gan_batch(16, 4), "z2": _gan_batch(16, 4)["z"]}
    O.train_step(game, scheme, opt_d, opt_g, batch, extra=[batch] * 4)
    assert (opt_d.steps, opt_g.steps) == (5, 1)


def test_noise_stream_is_the_same_for_every_iteration_shape():
    a, b = O.Noise(8, 4, 0, torch.device("cpu")), O.Noise(8, 4, 0, torch.device("cpu"))
    batch, extra = a.iteration(3)
    assert len(extra) == 2
    torch.testing.assert_close(extra[0]["z"], b()["z"])


def test_unknown_scheme_raises_before_any_step():
    game = _gan("nonsaturating")
    opt_d, opt_g = _Counting(game.disc.parameters()), _Counting(game.gen.parameters())
    with pytest.raises(ValueError, match="unknown scheme"):
        O.train_step(game, "three_stage", opt_d, opt_g, _gan_batch(16, 4), extra=[_gan_batch(16, 4)])
    assert opt_d.steps == 0


def test_gradient_checks_on_the_profile_networks(data_root, tiny_outputs):
    rows = gradient_checks("tiny", data_root=data_root, output_root=tiny_outputs, batch_size=6)
    assert len(rows) == len(GAN_CASES) + 1
    assert [r["exact_in_theory"] for r in rows] == [True, True, False, True, False, True]
    for r in rows:
        assert r["discriminator"] < 1e-10, r
        assert (r["generator"] < 1e-10) if r["exact_in_theory"] else (r["generator"] > 1e-3), r


@pytest.mark.parametrize("game", ["gan", "datafree"])
def test_tiny_timing_covers_every_scheme(game, data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    t = time_schemes(game, "tiny", **kw)
    assert set(t["median_s"]) == set(O.SCHEMES) and all(v > 0 for v in t["median_s"].values())
    assert set(t["ratios"]) == {f"one_stage/{s}" for s in O.SCHEMES if s != "one_stage"}
    assert t["d_steps"] == (1 if game == "gan" else 2)
    assert time_schemes(game, "tiny", **kw) == t  # cached
    with pytest.raises(ValueError, match="unknown schemes"):
        time_schemes(game, "tiny", schemes=("two_stage", "one_stage", "zero_stage"), **kw)


def test_a_runs_cache_key_ignores_the_timing_schedule():
    sched = G.gan_schedule("tiny")
    other = replace(sched, timing=O.TimingSchedule(warmup=9))
    assert O.run_config(other) == O.run_config(sched) and O.run_config(sched)["iterations"] == sched.iterations
