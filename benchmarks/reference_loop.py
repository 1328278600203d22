"""The reference: NetGraft's training loop with the structure of the official code, written from its description.

Per grafted block in turn, per step: one full teacher pass for the target, one full pass of the hybrid
from the image (so the teacher's prefix runs a second time), backward, step; after every epoch the
hybrid is scored on the whole test set. The net stage has the same structure. Schedule, batches,
initialisation and optimiser groups are nbgraft's, so reference and engine differ only in structure.

The test accuracies are reported, never used for a choice. `test_every` > 1 skips test passes to keep
the benchmark short; the benchmark then adds the skipped passes' time back, explicitly, as an estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from nbgraft.evaluate import accuracy, predict
from nbgraft.grafting import GraftParts, Grafted, epoch_batches, block_optimizer, graft_loss, net_optimizer, net_steps
from nbgraft.models import BlockNet
from nbgraft.schedules import GraftSchedule
from nbgraft.training import NET_STEP_STRIDE, derive_seed


@dataclass
class ReferenceLog:
    """Per-epoch mean losses per unit, the test accuracy after each scored epoch, and where time went."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    test_accuracy: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    epochs: int = 0
    test_passes: int = 0
    test_s: float = 0.0
    wall_s: float = 0.0

    @property
    def final_accuracy(self) -> float:
        """Test accuracy of the last unit (the whole student grafted) after its last epoch."""
        return list(self.test_accuracy.values())[-1][-1][1]

    @property
    def seconds_per_test_pass(self) -> float:
        return self.test_s / max(1, self.test_passes)


def reference_loss(teacher: BlockNet, hybrid: Grafted, xb: torch.Tensor, sched: GraftSchedule) -> torch.Tensor:
    """One step's loss the official way: the teacher for the target, then the hybrid from the image."""
    with torch.no_grad():
        target = teacher(xb).float()
    return graft_loss(hybrid(xb).float(), target, sched.loss, sched.temperature)


def _train_unit(log: ReferenceLog, name: str, teacher, hybrid, opt, x, bs, seed, n_epochs, sched, x_test, y_test,
                test_every: int) -> None:
    for epoch in range(n_epochs):
        hybrid.train()
        total = 0.0
        for b, xb in epoch_batches(x, bs, seed, epoch, replace(sched, views=0)):  # fresh augmentations
            xb = x[b] if xb is None else xb
            loss = reference_loss(teacher, hybrid, xb, sched)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        log.losses.setdefault(name, []).append(total / len(x))
        log.epochs += 1
        if (epoch + 1) % test_every == 0 or epoch == n_epochs - 1:
            t0 = time.perf_counter()
            acc = accuracy(predict(hybrid, x_test), y_test)
            log.test_s += time.perf_counter() - t0
            log.test_passes += 1
            log.test_accuracy.setdefault(name, []).append((epoch + 1, acc))


def reference_netgraft(teacher: BlockNet, parts: GraftParts, x: torch.Tensor, sched: GraftSchedule, shots: int,
                       seed: int, x_test: torch.Tensor, y_test: torch.Tensor, test_every: int = 1) -> ReferenceLog:
    """Sequential block grafting, then progressive net grafting, both the official way; trains `parts`."""
    if test_every < 1:
        raise ValueError(f"test_every must be >= 1, got {test_every}")
    teacher.eval()
    log = ReferenceLog()
    bs = sched.batch_size(shots, teacher.num_classes)
    t0 = time.perf_counter()
    for j, i in enumerate(parts.positions):
        n_epochs = sched.block_epochs_at(j)
        _train_unit(log, f"block{i + 1}", teacher, Grafted(teacher, parts, i, i), block_optimizer(parts, j, sched, shots), x, bs,
                    seed, n_epochs, sched, x_test, y_test, test_every)
    for a, b, n_epochs in net_steps(parts, sched):
        _train_unit(log, f"chain{a + 1}-{b + 1}", teacher, Grafted(teacher, parts, a, b),
                    net_optimizer(parts, a, b, sched, shots), x, bs, derive_seed(b + 1, seed, NET_STEP_STRIDE), n_epochs, sched, x_test,
                    y_test, test_every)
    log.wall_s = time.perf_counter() - t0
    return log
