"""Images from the teacher alone: the inversion loss falls, the teacher reads the target classes, and
NetGraft runs on synthetic and noise images with its own cache entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nbgraft.zeroshot import inversion as I
from nbgraft.runs.experiments import cached_runs, graft_seeds, untrained_student
from nbgraft.runs.teacher import get_teacher


def test_batch_statistics_term_is_zero_on_the_running_statistics():
    """Hooked on a BatchNorm layer whose running statistics are those of the batch, the term vanishes."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    with torch.no_grad():
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3), unbiased=False))
    stats = I.BatchStats(bn.eval())
    bn(x)
    assert stats.pop().item() == pytest.approx(0.0, abs=1e-5)
    bn(x + 1)  # every channel mean off by 1, variances equal: the term is |(1, 1, 1)| = sqrt(3)
    assert stats.pop().item() == pytest.approx(3 ** 0.5, rel=1e-5)
    stats.close()
    bn(x)
    assert stats.terms == []  # hooks removed


def test_uint8_round_trip_and_bounds():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    lo, hi = I.pixel_bounds(mean, std, "cpu")
    x = torch.cat([lo, hi, (lo + hi) / 2]).expand(3, 3, 4, 4)
    img = I.teacher_input_to_uint8(x, mean, std)
    assert img.dtype == np.uint8 and img.shape == (3, 4, 4, 3)
    assert (img[0] == 0).all() and (img[1] == 255).all() and (np.abs(img[2].astype(int) - 128) <= 1).all()


def test_labels_and_take_keep_every_class():
    y = I.class_labels(10, 3)
    assert y.tolist()[:12] == [*range(10), 0, 1]
    pool = {"x": np.zeros((30, 32, 32, 3), np.uint8), "y": y.numpy(), "metrics": {"per_class": 3}}
    x1, y1 = I.take(pool, 1)
    assert len(x1) == 10 and sorted(y1.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="pool holds 3"):
        I.take(pool, 4)
    a, _ = I.noise_images(10, 1, 0)
    b, _ = I.noise_images(10, 2, 0)
    assert (a == b[:10]).all() and a.std() > 50  # nested draws of uniform noise
    I.check_images_per_class([1, 10], "cpu")
    with pytest.raises(ValueError, match="ask for 1 to 10"):
        I.check_images_per_class([1, 20], "cpu")
    with pytest.raises(ValueError, match="unknown image source"):
        I.check_source("imagenet")


def test_inversion_loss_falls_and_the_teacher_reads_its_classes(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    pool = I.synthetic_pool("cifar10", 0, "tiny", **kw)
    m = pool["metrics"]
    sched = I.inversion_schedule("tiny")
    assert pool["x"].shape == (10 * sched.pool_per_class, 32, 32, 3) and pool["x"].dtype == np.uint8
    losses = m["losses"]
    assert losses["loss"][-1] < 0.7 * losses["loss"][0] and losses["ce"][-1] < 0.75 * losses["ce"][0], losses
    assert losses["bn"][-1] < losses["bn"][0] and m["bn_layers"] > 0
    # The tiny teacher is weak (about a third right on the test set), yet reads most of its images as their
    # target classes (chance: 10%; the cpu teacher reads 100%, chapter 7).
    assert m["teacher_accuracy_on_synthetic"] >= 40, m["teacher_accuracy_on_synthetic"]
    teacher, _ = get_teacher("cifar10", "tiny", **kw)
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    again = I.synthetic_pool("cifar10", 0, "tiny", **kw)  # cached
    assert (again["x"] == pool["x"]).all() and again["metrics"] == m


def test_netgraft_on_synthetic_and_noise_images_has_its_own_entries(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    real = graft_seeds("cifar10", 1, [0], "tiny", **kw)[0]
    synth = graft_seeds("cifar10", 1, [0], "tiny", source="synthetic", **kw)[0]
    noise = graft_seeds("cifar10", 1, [0], "tiny", source="noise", **kw)[0]
    keys = {real["cache_key"], synth["cache_key"], noise["cache_key"]}
    assert len(keys) == 3
    assert (real.get("image_source"), synth["image_source"], noise["image_source"]) == ("real", "synthetic", "noise")
    assert synth["images"] == noise["images"] == 10
    # Data-free runs score their parts on the validation pool only, whoever asks (chapter 7 or the command line).
    assert (real["schedule"]["part_test_scores"], synth["schedule"]["part_test_scores"],
            noise["schedule"]["part_test_scores"]) == (True, False, False)
    assert not any("test_accuracy" in sc for sc in synth["blocks"].values())
    assert synth["blocks"] and all("test_accuracy" in sc for sc in real["blocks"].values())
    assert {m["cache_key"] for m in cached_runs("netgraft", tiny_outputs, profile="tiny", dataset="cifar10")} \
        >= {real["cache_key"]}
    assert synth["cache_key"] not in {m["cache_key"] for m in cached_runs("netgraft", tiny_outputs, profile="tiny",
                                                                          dataset="cifar10")}
    synthetic = cached_runs("netgraft", tiny_outputs, profile="tiny", dataset="cifar10", source="synthetic")
    assert synth["cache_key"] in {m["cache_key"] for m in synthetic}  # other tests of the session may add more
    assert {m["image_source"] for m in synthetic} == {"synthetic"}


def test_untrained_student_is_scored_from_the_images_channels(data_root, tiny_outputs):
    kw = {"data_root": data_root, "output_root": tiny_outputs, "device": "cpu"}
    a = untrained_student("cifar10", 1, 0, "tiny", source="noise", **kw)
    b = untrained_student("cifar10", 1, 0, "tiny", source="noise", **kw)
    assert a == b and a["init"] == "teacher" and 0 <= a["test_accuracy"] <= 100
    paper = untrained_student("cifar10", 1, 0, "tiny", method="netgraft_paper", **kw)
    assert paper["init"] == "random"
