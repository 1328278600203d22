"""The schedules every run is made of: the teacher's SGD, a NetGraft recipe, a baseline's training. Frozen
dataclasses, so a schedule hashes into a cache key as plain JSON and a changed field is a different experiment.
The values the book uses live in nbgraft.profiles."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TeacherSchedule:
    """SGD + momentum with warm-up and cosine decay, per step."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    train_limit: int | None = None  # cap on training images (tests only)


@dataclass(frozen=True)
class GraftSchedule:
    """A NetGraft recipe: Adam, learning rates and batch size (optionally scaled with the number of shots).

    Per-block tuples are indexed by grafted block (the last value repeats for longer chains).
    `block_epochs` = 0 skips the block stage; `net_mode` = "all_at_once" grafts the whole student
    in one net step instead of growing the chain. `init` = "random" (the paper) or "teacher" (each
    student block starts as its teacher block restricted to kept channels, nbgraft.models.inherit).
    `feature_weight` > 0 adds a loss on the grafted part's output features next to the logits (weighted
    by `logit_weight`; 0 trains such parts on their features alone, without running the teacher after them).
    `views` > 0 draws augmentations from a fixed pool of that many views per image, whose teacher
    activations are computed once (0: a fresh augmentation every time; see nbgraft.grafting.views).
    """

    block_epochs: tuple[int, ...] = (100, 60, 60)
    block_lr: tuple[float, ...] = (2.5e-4, 2.5e-4, 2.5e-4)
    block_adapter_lr: float = 2.5e-3
    net_epochs: tuple[int, ...] = (100, 100)
    net_lr: float = 1e-4
    net_adapter_lr: float = 1e-4
    batch_per_shot: float = 6.4  # the paper: batch = 64 * N / 10
    lr_reference_shots: int = 10  # the paper: block-stage lr x N / 10
    loss: str = "nmse"  # "nmse" (paper), "kl", "mse"
    temperature: float = 4.0  # only for loss = "kl"
    augment: bool = True
    net_mode: str = "progressive"  # or "all_at_once"
    scale_lr_with_shots: bool = True  # block stage: the paper's rule; off = the same learning rates for every N
    scale_net_lr_with_shots: bool = False  # net stage: the paper's code uses 1e-4 for every N
    init: str = "random"
    feature_weight: float = 0.0
    feature_points: str = "exit"  # where the feature loss looks: the part's "exit", or "all" its boundaries
    logit_weight: float = 1.0  # 0 with feature_weight > 0: parts not ending in the logits learn features alone
    views: int = 0
    mixup: bool = False  # blend the augmented images pairwise (function matching); always fresh, never pooled
    max_batch: int = 0  # cap on the batch size (0: none)
    part_test_scores: bool = True  # score each grafted part on the test set too (not only on the validation pool)
    val_every: int = 0  # record each block's validation accuracy every that many block-stage epochs (0: never)
    # > 0: at small N the block stage runs longer, until each block has seen this many images (a step on few
    # images is cheap; an epoch on 10 images is 10x shorter than on 100). Added after runs were cached: see
    # cache_fields.
    block_images: int = 0

    def block_epochs_at(self, j: int, images: int | None = None) -> int:
        """Epochs of the j-th grafted block (the last value repeats), on `images` few-shot images: with
        `block_images`, at least as many as it takes to see that many images."""
        epochs = self.block_epochs[min(j, len(self.block_epochs) - 1)]
        if self.block_images and images and epochs:
            epochs = max(epochs, -(-self.block_images // images))
        return epochs

    def cache_fields(self) -> dict:
        """The fields a cache key holds: those added after runs were cached only when set, so that every
        earlier key (and the run it names) stays valid."""
        out = asdict(self)
        for name, default in LATE_FIELDS.items():
            if out[name] == default:
                del out[name]
        return out

    def block_lr_at(self, j: int) -> float:
        """Learning rate of the j-th grafted block (the last value repeats)."""
        return self.block_lr[min(j, len(self.block_lr) - 1)]

    def lr_scale(self, shots: int) -> float:
        return shots / self.lr_reference_shots if self.scale_lr_with_shots else 1.0

    def net_lr_scale(self, shots: int) -> float:
        return shots / self.lr_reference_shots if self.scale_net_lr_with_shots else 1.0

    def batch_size(self, shots: int, num_classes: int) -> int:
        bs = max(2, min(int(self.batch_per_shot * shots), shots * num_classes))
        return min(bs, self.max_batch) if self.max_batch else bs


# GraftSchedule fields that enter a cache key only when not at these defaults (see cache_fields).
LATE_FIELDS = {"block_images": 0}


@dataclass(frozen=True)
class BaselineSchedule:
    """A student trained on the N-shot images alone: from labels (scratch) or teacher logits (KD)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    augment: bool = True
    mixup: bool = False  # blend image pairs (labels: the two cross-entropies weighted alike), as the book's NetGraft
    views: int = 0  # a fixed pool of augmented views (as GraftSchedule.views); never with mixup


@dataclass(frozen=True)
class FitSchedule:
    """A student recovered without gradient steps (FSKD): maps fitted by least squares on the N-shot images,
    seen as `copies` augmented views each, with a ridge relative to the data's scale."""

    copies: int = 16
    ridge: float = 1e-3
    augment: bool = True
