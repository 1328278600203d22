"""Every schedule in one place: `cpu` (the book's default), `paper` (the published recipe) and `tiny` (tests).

A profile is a frozen dataclass, so a schedule hashes into the experiment cache key as plain JSON, and
a changed field is a different experiment. Each profile holds, per teacher and data set, the recipe of
every method the book compares (see METHODS): NetGraft as the book runs it by default, NetGraft as
the paper runs it, and four baselines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .data import DATASETS
from .methods import BASELINE_METHODS
from .schedules import BaselineSchedule, FitSchedule, GraftSchedule, TeacherSchedule

# Teachers: the profile's VGG16 trained here on either data set, or a published network (no training).
TEACHERS = {"vgg16": DATASETS, "resnet56": ("cifar10",)}


def recipe_family(teacher: str) -> str:
    """Recipes are kept per teacher family: the VGG16 trained here, or any CIFAR ResNet (the published ResNet-56,
    or a checkpoint of any depth a user brings, given by its path): a new depth gets the family's recipe."""
    return "vgg16" if teacher == "vgg16" else "resnet"


def recipe_key(teacher: str, dataset: str, method: str) -> str:
    return f"{recipe_family(teacher)}/{dataset}/{method}"


@dataclass(frozen=True)
class Profile:
    name: str
    width: float  # multiplier on VGG16's channel widths
    batch_norm: bool  # BN after each conv of the teacher's conv blocks
    teacher: dict[str, TeacherSchedule]  # per data set
    recipes: dict[str, GraftSchedule | BaselineSchedule | FitSchedule]  # recipe_key(teacher, data set, method) -> schedule
    val_per_class: dict[str, int] = field(default_factory=lambda: {"cifar10": 500, "cifar100": 50})
    test_limit: int | None = None  # evaluate on the first k test images (tests only)

    def recipe(self, method: str, dataset: str, teacher: str = "vgg16"):
        key = recipe_key(teacher, dataset, method)
        if key not in self.recipes:
            have = sorted(k for k in self.recipes if k.startswith(f"{recipe_family(teacher)}/{dataset}/"))
            raise ValueError(f"profile {self.name!r} has no {method!r} recipe for the {recipe_family(teacher)} "
                             f"family's teachers on {dataset}"
                             + (f"; it has {', '.join(have)}" if have else "")
                             + "; nbgraft.profiles.transfer_recipe() is the recipe for a family nobody tuned on")
        return self.recipes[key]

    def graft_for(self, dataset: str, teacher: str = "vgg16", method: str = "netgraft") -> GraftSchedule:
        return self.recipe(method, dataset, teacher)

    def teacher_for(self, dataset: str) -> TeacherSchedule:
        return self.teacher[dataset]

    def to_dict(self) -> dict:
        return asdict(self)


def _recipes(teacher: str, datasets, **by_method) -> dict:
    """{recipe_key: schedule} for every (data set, method) given as method=schedule or {data set: schedule}."""
    out = {}
    for ds in datasets:
        for method, sched in by_method.items():
            out[recipe_key(teacher, ds, method)] = sched[ds] if isinstance(sched, dict) else sched
    return out


# --------------------------------------------------------------------------- paper
# zju-vipa/NetGraft utils/parser_cifar10.py, parser_cifar100.py and graft_net.py (facts, re-typed): block
# stage Adam at the parser's rates x N/10; net stage Adam at 1e-4 for blocks and adapters alike, every N
# (the parser's net-stage rates are never used).
_PAPER_GRAFT = {
    "cifar10": GraftSchedule(),
    "cifar100": GraftSchedule(block_epochs=(1000, 200, 200), block_lr=(2.5e-4, 1e-3, 1e-3), block_adapter_lr=1e-3,
                              net_epochs=(150, 150)),
}
_PAPER_BASELINE = BaselineSchedule(steps=5000)

# --------------------------------------------------------------------------- cpu
# A x0.25 VGG16 that trains on two CPU cores in about a quarter of an hour. BN in the teacher's conv
# blocks buys ~2 points at this budget (checked on these machines); the paper's teacher has none.
_CPU_PAPER = {  # the paper's recipe at the cpu budget: random init, logits only; rates and lengths chosen on the
    # validation pool (`nbgraft tune`: this grid's winner was 600/300 block and 300/300 net epochs at these rates)
    "cifar10": GraftSchedule(block_epochs=(600, 600, 600), block_lr=(1e-3,), block_adapter_lr=1e-2,
                             net_epochs=(300, 300), net_lr=1e-3 / 3, net_adapter_lr=1e-2 / 3, scale_lr_with_shots=False,
                             val_every=50),
    "cifar100": GraftSchedule(block_epochs=(120, 120, 120), block_lr=(1e-3,), block_adapter_lr=1e-2,
                              net_epochs=(60, 60), net_lr=1e-3 / 3, net_adapter_lr=1e-2 / 3, scale_lr_with_shots=False,
                              val_every=10),
}
_CPU_NETGRAFT = {  # the book's recipe, chosen on the validation pool (see the notes below and chapter 5)
    "cifar10": GraftSchedule(block_epochs=(200,), block_lr=(1e-3,), block_adapter_lr=1e-3, net_epochs=(100,),
                             net_lr=3e-4, net_adapter_lr=3e-4, scale_lr_with_shots=False, init="teacher",
                             feature_weight=1.0, logit_weight=0.0, mixup=True, val_every=20),
    # CIFAR-100's draws are 10x larger and its blocks stop improving on the validation pool after ~20 epochs.
    "cifar100": GraftSchedule(block_epochs=(40,), block_lr=(1e-3,), block_adapter_lr=1e-3, net_epochs=(20,),
                              net_lr=3e-4, net_adapter_lr=3e-4, scale_lr_with_shots=False, init="teacher",
                              feature_weight=1.0, logit_weight=0.0, mixup=True, val_every=5),
}
# How each recipe was chosen on the validation pool: benchmarks/README.md, "Tuning history".
# `kd` (random start, no BatchNorm) trains only at the highest rate and the longest length of its grids, on both
# data sets (CIFAR-10 34.7 %, CIFAR-100 12.4 %: still on those edges); `scratch` chose 2,400 steps on both (inside
# its CIFAR-10 grid), and CIFAR-100's `scratch_inherited` its own pool's corner (twice the steps at 3x the rate).
_CPU_BASELINE = {"kd": BaselineSchedule(steps=2400, lr=0.05, mixup=True),
                 "scratch": BaselineSchedule(steps=2400, lr=0.05, mixup=True),
                 "kd_inherited": BaselineSchedule(steps=1200, lr=0.05, mixup=True),
                 "scratch_inherited": {"cifar10": BaselineSchedule(steps=1200, lr=0.05 / 3, mixup=True),
                                       "cifar100": BaselineSchedule(steps=2400, lr=0.05, mixup=True)}}

# The field's methods on the book's teacher-initialised student (nbgraft.methods: pruned_kd, mir, fskd), chosen on
# the validation pool with the grid every method gets (`nbgraft tune`; benchmarks/README.md, "Tuning history"), on
# each data set's own pool (CIFAR-100's grid kept `pruned_kd`'s CIFAR-10 choice and moved MiR's and FSKD's).
_CPU_FIELD = {"pruned_kd": BaselineSchedule(steps=2400, lr=0.005 * 9, mixup=True),
              "mir": {"cifar10": BaselineSchedule(steps=1200, lr=0.005 * 27, mixup=True),
                      "cifar100": BaselineSchedule(steps=600, lr=0.005 * 27, mixup=True)},
              "fskd": {"cifar10": FitSchedule(copies=32, ridge=1e-3), "cifar100": FitSchedule(copies=8, ridge=1e-3 / 9)}}


def _at_paper_length(sched):
    """A CPU field recipe at the paper profile's baseline length (per data set where it has one per data set)."""
    if isinstance(sched, dict):
        return {d: _at_paper_length(s) for d, s in sched.items()}
    return replace(sched, steps=_PAPER_BASELINE.steps) if isinstance(sched, BaselineSchedule) else sched

# The published ResNet-56 costs ~6x the x0.25 VGG per image: its parts are scored on the validation pool
# only, and the paper's recipe draws its augmentations from a pool of 16 views per image.
_RESNET_PAPER = GraftSchedule(block_epochs=(60,), block_lr=(3e-3,), block_adapter_lr=3e-2, net_epochs=(30,),
                              net_lr=1e-3, net_adapter_lr=1e-2, scale_lr_with_shots=False, views=16,
                              part_test_scores=False)
_RESNET_NETGRAFT = GraftSchedule(block_epochs=(150,), block_lr=(1e-3,), block_adapter_lr=1e-3, net_epochs=(0,),
                                 net_lr=3e-4, net_adapter_lr=3e-4, scale_lr_with_shots=False, init="teacher",
                                 feature_weight=1.0, logit_weight=0.0, feature_points="all", mixup=True,
                                 part_test_scores=False, block_images=8000)
# The students that start from random thin blocks: KD at the rate and length its grid chose on this teacher's pool
# (`nbgraft tune --teacher resnet56`; x3 at 8x its first 300 steps, still on the longest edge: benchmarks/README.md).
_RESNET_BASELINE = {m: (BaselineSchedule(steps=2400, views=16, lr=1.5e-3) if m.startswith("kd")
                        else BaselineSchedule(steps=300, views=16, lr=5e-3)) for m in BASELINE_METHODS}
# The field's methods on this teacher, chosen on its validation pool with the grid every method gets (`nbgraft
# tune --teacher resnet56`). The BN-free 56-layer student diverges under end-to-end KD at the VGG's rates.
_RESNET_FIELD = {"pruned_kd": BaselineSchedule(steps=2400, views=16, lr=5e-4 / 27),
                 "mir": BaselineSchedule(steps=1200, views=16, lr=5e-4 * 27),
                 "fskd": FitSchedule(copies=16, ridge=1e-3 / 3)}

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper", width=1.0, batch_norm=False,
        teacher={d: TeacherSchedule(epochs=200, lr=0.05, label_smoothing=0.0, warmup_epochs=2) for d in DATASETS},
        recipes={
            # The book's recipe at the paper's lengths and rates (not checked on a GPU: none was lent).
            **_recipes("vgg16", DATASETS, netgraft_paper=_PAPER_GRAFT,
                       netgraft={d: GraftSchedule(**{**asdict(s), **{k: getattr(_CPU_NETGRAFT[d], k) for k in (
                           "init", "feature_weight", "logit_weight", "mixup")}}) for d, s in _PAPER_GRAFT.items()},
                       **{m: _PAPER_BASELINE for m in BASELINE_METHODS},
                       **{m: _at_paper_length(s) for m, s in _CPU_FIELD.items()}),
            **_recipes("resnet", DATASETS, netgraft_paper=_RESNET_PAPER, netgraft=_RESNET_NETGRAFT,
                       **_RESNET_BASELINE, **_RESNET_FIELD),
        },
    ),
    "cpu": Profile(
        name="cpu", width=0.25, batch_norm=True,
        # CIFAR-100's teacher gets half the epochs so the whole book stays near an hour on 2 cores.
        # CIFAR-10 at 20 epochs instead of 30 (validation pool): 87.30 vs 87.84 %, 19.8 vs ~29 min here; kept at 30.
        teacher={"cifar10": TeacherSchedule(epochs=30), "cifar100": TeacherSchedule(epochs=15)},
        recipes={
            **_recipes("vgg16", DATASETS, netgraft=_CPU_NETGRAFT, netgraft_paper=_CPU_PAPER, **_CPU_BASELINE,
                       **_CPU_FIELD),
            **_recipes("resnet", DATASETS, netgraft_paper=_RESNET_PAPER, netgraft=_RESNET_NETGRAFT,
                       **_RESNET_BASELINE, **_RESNET_FIELD),
        },
    ),
    # Seconds, not minutes: for tests and CI smoke runs of the notebooks. Numbers are meaningless.
    "tiny": Profile(
        name="tiny", width=0.125, batch_norm=True,
        teacher={d: TeacherSchedule(epochs=1, train_limit=4000, warmup_epochs=0.2) for d in DATASETS},
        recipes={
            **_recipes("vgg16", DATASETS,
                       netgraft=GraftSchedule(block_epochs=(8, 6, 6), net_epochs=(4, 4), block_lr=(1e-3,), net_lr=5e-4,
                                              init="teacher", feature_weight=1.0, logit_weight=0.0, mixup=True,
                                              val_every=4),
                       netgraft_paper=GraftSchedule(block_epochs=(8, 6, 6), net_epochs=(4, 4), block_lr=(1e-3,),
                                                    net_lr=5e-4, val_every=4),
                       **{m: BaselineSchedule(steps=20, mixup=True) for m in (*BASELINE_METHODS, "pruned_kd", "mir")},
                       fskd=FitSchedule(copies=2)),
            **_recipes("resnet", DATASETS,
                       netgraft=GraftSchedule(block_epochs=(2,), net_epochs=(1,), init="teacher", feature_weight=1.0,
                                              logit_weight=0.0, feature_points="all", mixup=True,
                                              part_test_scores=False),
                       netgraft_paper=GraftSchedule(block_epochs=(2,), net_epochs=(1,), views=2, part_test_scores=False),
                       **{m: BaselineSchedule(steps=4, views=2) for m in (*BASELINE_METHODS, "pruned_kd", "mir")},
                       fskd=FitSchedule(copies=2)),
        },
        val_per_class={"cifar10": 20, "cifar100": 2},
        test_limit=500,
    ),
}


def transfer_recipe(profile="cpu", method: str = "netgraft"):
    """The recipe for a data set or teacher family nobody tuned on: the one chosen on CIFAR-10's VGG16, unchanged
    (chapter 5's "What choosing costs" measures what carrying it to CIFAR-100 and the ResNet-56 costs)."""
    return get_profile(profile).recipe(method, *TRANSFER_SOURCE)


TRANSFER_SOURCE = ("cifar10", "vgg16")  # (data set, teacher) the carried-over recipe was chosen on


def schedule_for(table: dict, profile, what: str):
    """A per-profile table's entry (chapter 7's GAN, data-free and inversion schedules), or a clear error."""
    name = get_profile(profile).name
    if name not in table:
        raise ValueError(f"no {what} schedule for profile {name!r}; nbgraft knows {sorted(table)}")
    return table[name]


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
