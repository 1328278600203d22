"""The teacher: the profile's VGG16 trained here, or a published network loaded and checked.

`vgg16` trains (or reads from the cache) the profile's VGG16 on the train split minus the validation
pool, checkpointed every epoch, so an interrupted training resumes where it stopped. `resnet56` is the
published CIFAR-10 ResNet-56 (no training): its file is looked up, checked and scored once. Either
way the test set is evaluated once, for the report, and the predictions are cached for agreement scores.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data as D
from ..cache import DamagedEntry, Entry, Memo, warn
from ..device import accumulator, autocast, machine, pick_device, policy
from ..evaluate import predict, report
from ..models import BlockNet, build, load_state, spec_from_dict
from ..models import resnet as R
from ..models import vgg as V
from ..profiles import TEACHERS, get_profile
from ..training import TEACHER_STRIDE, derive_seed, generator, progress, seed_everything, sgd_with_cosine

REPO = Path(__file__).resolve().parents[2]


def check_teacher(teacher, dataset: str) -> str:
    """The teacher as the experiments layer passes it on (a built-in name, or a checkpoint's path: see
    `as_teacher`), if nbgraft can use it on this data set; a clear error otherwise."""
    dataset, teacher = D.check_dataset(dataset), as_teacher(teacher)
    if teacher in TEACHERS:
        if dataset not in TEACHERS[teacher]:
            raise ValueError(f"the {teacher} teacher exists for {', '.join(TEACHERS[teacher])}, not {dataset}")
        return teacher
    file = teacher_file(teacher)
    if file is None:
        raise ValueError(f"unknown teacher {teacher!r}: nbgraft knows {', '.join(TEACHERS)}, or a CIFAR ResNet "
                         "checkpoint given by its path (`nbgraft graft --teacher-weights PATH --arch resnetD`, or "
                         "`load_teacher(path, arch=...)` in Python; any other network enters as a BlockNet, see "
                         "the README)")
    if file.num_classes != D.NUM_CLASSES[dataset]:
        raise ValueError(f"{file.path} has {file.num_classes} classes, {dataset} has {D.NUM_CLASSES[dataset]}: "
                         "choose the data set it was trained on")
    return teacher


@dataclass(frozen=True)
class TeacherFile:
    """A CIFAR ResNet checkpoint used as a teacher: what its cache key and its tables need to know of it."""

    path: str
    md5: str
    depth: int
    num_classes: int

    @property
    def name(self) -> str:
        """How tables and cache keys name it: the published name if it is a published file (so it shares that
        teacher's cache), else its depth and checksum."""
        known = [n for n, info in R.PUBLISHED.items() if info["md5"] == self.md5]
        return known[0] if known else f"resnet{self.depth}-{self.md5[:8]}"


_FILES = Memo(16)


def teacher_file(teacher) -> TeacherFile | None:
    """The checkpoint a teacher given by its path is (read once per file version), or None for a built-in
    name or a path that is no file."""
    teacher = as_teacher(teacher)
    if teacher in TEACHERS or not Path(teacher).is_file():
        return None
    path = Path(teacher).resolve()
    stat = path.stat()

    def read() -> TeacherFile:
        net = R.load_checkpoint(path)
        return TeacherFile(str(path), R.file_md5(path), net.spec.depth, net.num_classes)

    return _FILES.get((str(path), stat.st_size, stat.st_mtime_ns), read)


def as_teacher(teacher) -> str:
    """How the experiments layer passes a teacher on: a built-in name ("vgg16", "resnet56"), a checkpoint's path,
    or a network `load_teacher` returned (it remembers its file), as that file's path."""
    if isinstance(teacher, torch.nn.Module):
        path = getattr(teacher, "checkpoint", None)
        if path is None:
            raise ValueError("the experiments layer (caching, seeds, tables) takes a network through its checkpoint "
                             "file: load it with nbgraft.load_teacher(path, arch=...), or pass the path; a network "
                             "built in memory grafts with nbgraft.netgraft directly")
        return path
    return str(teacher) if isinstance(teacher, Path) else teacher


def teacher_datasets(teacher) -> tuple[str, ...]:
    """The data sets a teacher can be used on (a checkpoint: those with as many classes as it has)."""
    teacher, file = as_teacher(teacher), teacher_file(teacher)
    if file is None:
        if teacher not in TEACHERS:
            check_teacher(teacher, "cifar10")  # says what a teacher can be
        return TEACHERS[teacher]
    return tuple(d for d in D.DATASETS if D.NUM_CLASSES[d] == file.num_classes)


def teacher_label(teacher) -> str:
    """The teacher's name in tables and run keys: a built-in name, or a checkpoint's `TeacherFile.name`."""
    file = teacher_file(teacher)
    return as_teacher(teacher) if file is None else file.name


def load_teacher(path: str | Path, arch: str, md5: str | None = None) -> BlockNet:
    """A pretrained network from its checkpoint file, as a frozen eval-mode BlockNet that carries its spec (the
    input normalisation included: `teacher.spec.mean`, `.std`). `arch`: "resnetD" for a CIFAR ResNet of any
    depth D = 6n + 2 in the published format (checked against the file); `md5`: the file's checksum, if known.
    The network remembers its file (`.checkpoint`), so the experiments layer takes it as a teacher: cached runs,
    seeds trained together, scores and tables, with its family's recipes (`nbgraft.profiles.recipe_family`)."""
    match = re.fullmatch(r"resnet(\d+)", str(arch))
    if not match or (int(match.group(1)) - 2) % 6 or int(match.group(1)) < 8:
        raise ValueError(f"unknown arch {arch!r}: nbgraft loads CIFAR ResNets of depth 6n + 2, e.g. resnet20, "
                         "resnet32, resnet44, resnet56, resnet110")
    net = R.load_checkpoint(path, int(match.group(1)), md5).requires_grad_(False)
    net.checkpoint = str(Path(path).resolve())
    return net


def teachers_root() -> list[Path]:
    """Where published weights are looked up: $NBGRAFT_TEACHERS, ./teachers, ../shared/teachers."""
    env = os.environ.get("NBGRAFT_TEACHERS")
    return [Path(env)] if env else [REPO / "teachers", REPO.parent / "shared" / "teachers"]


def teacher_spec_for(dataset: str, profile, teacher: str = "vgg16"):
    """The teacher's architecture (a family spec), without loading anything."""
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    teacher = check_teacher(teacher, dataset)
    if teacher in R.PUBLISHED:
        return R.teacher_spec(R.PUBLISHED[teacher]["depth"])
    if teacher != "vgg16":
        file = teacher_file(teacher)
        return R.teacher_spec(file.depth, file.num_classes)
    return V.teacher_spec(D.NUM_CLASSES[dataset], profile.width, profile.batch_norm, D.MEAN[dataset], D.STD[dataset])


def teacher_config(dataset: str, profile, seed: int = 0, teacher: str = "vgg16", data_root=None) -> dict:
    """What defines a teacher, its cache key: architecture, schedule (or published file) and the data's hash."""
    profile, dataset = get_profile(profile), D.check_dataset(dataset)
    spec = teacher_spec_for(dataset, profile, teacher)
    data = D.load_dataset(dataset, data_root).fingerprint
    if teacher != "vgg16":
        file = teacher_file(teacher)
        name, md5 = (teacher, R.PUBLISHED[teacher]["md5"]) if file is None else (file.name, file.md5)
        return {"dataset": dataset, "published": name, "md5": md5, "spec": spec,
                "test_limit": profile.test_limit, "val_per_class": profile.val_per_class[dataset], "data": data}
    return {"dataset": dataset, "spec": spec, "schedule": profile.teacher_for(dataset),
            "val_per_class": profile.val_per_class[dataset], "seed": seed, "data": data}


def teacher_entry(dataset: str, profile="cpu", *, seed: int = 0, teacher: str = "vgg16", data_root=None,
                  output_root=None) -> Entry:
    """The teacher's cache entry (its key is `teacher_config`), whether or not it is trained yet."""
    return Entry(output_root, "teacher", teacher_config(dataset, profile, seed, teacher, data_root),
                 metrics=("test_accuracy", "wall_s", "train_images"), files=("test_pred.pt",))


def spec_from_config(cfg: dict):
    """The teacher's spec from its config (as built, or as read back from JSON)."""
    return spec_from_dict(cfg["spec"])


def teacher_stamp(entry: Entry) -> tuple:
    """One stored teacher: its folder and when it was finished. Equal cache keys are not enough to share
    its tensors, since another output root (or a teacher trained again) holds other weights."""
    return (str(entry.dir.resolve()), entry.path("metrics.json").stat().st_mtime_ns)


# Teachers already read back in this process, by stored teacher (teacher_stamp) and device: a cached
# sweep asks for its teacher once per run, and building it again each time was most of its read-back time.
_LOADED = Memo(3)


def get_teacher(dataset: str, profile="cpu", *, seed: int = 0, data_root=None, output_root=None, device=None,
                teacher: str = "vgg16") -> tuple[BlockNet, dict]:
    """Return (teacher in eval mode, its metrics), training (or scoring) it first if the cache does not hold it.
    Callers share the returned module: it stays frozen and in eval mode."""
    device = pick_device(device)
    entry = teacher_entry(dataset, profile, seed=seed, teacher=teacher, data_root=data_root, output_root=output_root)
    fresh = None
    if not entry.done:  # trained (or scored) now: the memo is keyed by the finished entry
        fresh = _get_teacher(entry, dataset, profile, seed, data_root, output_root, device, teacher)
    net, metrics = _LOADED.get((*teacher_stamp(entry), str(device)), lambda: fresh or _get_teacher(
        entry, dataset, profile, seed, data_root, output_root, device, teacher))
    return net, dict(metrics)


def _get_teacher(entry: Entry, dataset: str, profile, seed: int, data_root, output_root, device,
                 teacher: str) -> tuple[BlockNet, dict]:
    """get_teacher without the per-process memo: read the entry, or train (score) and store it first."""

    def load() -> tuple[BlockNet, dict]:
        if teacher != "vgg16":
            return _published(teacher, entry, get_profile(profile), data_root, device)
        seed_everything(seed)  # the initial weights are part of the experiment
        model = build(spec_from_config(entry.config)).to(device)
        if not entry.done:
            _train(model, entry, get_profile(profile), data_root, device)
        load_state(model, entry.load_tensors("model.pt", device), f"teacher checkpoint {entry.path('model.pt')}")
        return model.eval().requires_grad_(False), entry.metrics()

    if entry.done:  # finished (its files were written before metrics.json): read it without queueing for the lock
        try:
            return load()
        except DamagedEntry:
            pass  # moved aside under the lock, below
    why = ""
    for _ in range(2):  # a damaged entry is moved aside and computed again once, never in a loop
        with entry.lock():
            try:
                return load()
            except DamagedEntry as err:
                why = str(err)
                entry.quarantine(why)
    raise DamagedEntry(f"{why}, even after computing the teacher again: check the disk under {entry.dir.parent} "
                       "(space, permissions) and run the command again")


def teacher_test_predictions(dataset: str, profile="cpu", *, seed: int = 0, data_root=None, output_root=None,
                             teacher: str = "vgg16") -> torch.Tensor:
    """The teacher's predicted class for every test image (saved with it), for agreement scores."""
    entry = teacher_entry(dataset, profile, seed=seed, teacher=teacher, data_root=data_root, output_root=output_root)
    try:
        return entry.load_tensors("test_pred.pt")
    except DamagedEntry as err:
        entry.quarantine(str(err))
    get_teacher(dataset, profile, seed=seed, data_root=data_root, output_root=output_root, teacher=teacher)
    return entry.load_tensors("test_pred.pt")


def _published(name: str, entry: Entry, profile, data_root, device) -> tuple[BlockNet, dict]:
    """A published teacher (by name, looked up in `teachers_root`) or a checkpoint (by path), scored once."""
    file = teacher_file(name)
    if file is None:
        info = R.PUBLISHED[name]
        paths = [root / info["file"] for root in teachers_root()]
        path = next((p for p in paths if p.is_file()), paths[0])
        model = R.load_published(name, path)
    else:
        info, path = R.PUBLISHED.get(file.name, {}), Path(file.path)
        model = R.load_checkpoint(path, file.depth, file.md5)
    model = model.to(device).requires_grad_(False)
    if not entry.done:  # a finished entry's predictions were checked with it (Entry.verify)
        t0 = time.perf_counter()
        data = D.load_dataset(entry.config["dataset"], data_root)
        x_test, y_test = D.test_arrays(data, profile.test_limit)
        spec = model.spec
        pred = predict(model, D.to_tensor(x_test, data.name, device, spec.mean, spec.std)).argmax(1).cpu()
        acc = (pred == torch.from_numpy(y_test)).float().mean().item() * 100
        entry.start()
        entry.save_tensors("test_pred.pt", pred)
        entry.finish({"test_accuracy": acc, "published_test_accuracy": info.get("test_accuracy"), "weights": str(path),
                      "history": [], "wall_s": time.perf_counter() - t0, "device": str(device),
                      "machine": machine(device),
                      "torch_threads": torch.get_num_threads(), "data_source": data.source, "train_images": 0})
    return model, entry.metrics()


CHECKPOINT_EVERY_S = 30.0


def train_epoch(model: BlockNet, x: torch.Tensor, y: torch.Tensor, opt, lr_sched, sched, gen: torch.Generator
                ) -> tuple[float, float]:
    """One epoch of the teacher's SGD over (x, y) in shuffled, augmented batches; (mean loss, accuracy %).

    Everything stays on the device: batch indices, augmentation, the running sums (read once, at the end)."""
    model.train()
    device = x.device
    loss_sum, correct = accumulator(device), accumulator(device)
    channels_last = policy(device).channels_last
    for b in D.batches(len(x), sched.batch_size, gen):
        b = b.to(device)
        xb = D.augment(x[b], gen)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), y[b], label_smoothing=sched.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        loss_sum += loss.detach().to(loss_sum.dtype) * len(b)
        correct += (logits.argmax(1) == y[b]).sum()
    return loss_sum.item() / len(x), 100 * int(correct.item()) / len(x)


def _train(model: BlockNet, entry: Entry, profile, data_root, device: torch.device) -> None:
    cfg = entry.config
    sched = profile.teacher_for(cfg["dataset"])
    data = D.load_dataset(cfg["dataset"], data_root)
    split = D.make_split(data, cfg["val_per_class"])
    idx = split.teacher_train if sched.train_limit is None else split.teacher_train[: sched.train_limit]
    x = D.to_tensor(data.x_train[idx], data.name, device)
    y = torch.from_numpy(data.y_train[idx]).to(device)
    x_val = D.to_tensor(data.x_train[split.val], data.name, device)
    y_val = torch.from_numpy(data.y_train[split.val]).to(device)
    steps_per_epoch = -(-len(x) // sched.batch_size)
    opt, lr_sched = sgd_with_cosine(model, sched.lr, sched.momentum, sched.weight_decay,
                                    sched.epochs * steps_per_epoch, int(sched.warmup_epochs * steps_per_epoch))
    state = {"epoch": 0, "history": [], "wall_s": 0.0}
    saved = None
    if entry.path("resume.pt").is_file():
        try:
            saved = entry.load_tensors("resume.pt", device)
        except DamagedEntry as err:
            warn(f"{err}; training the teacher from its first epoch")
    if saved is not None:
        load_state(model, saved["model"], f"resume checkpoint {entry.path('resume.pt')}")
        opt.load_state_dict(saved["opt"])
        lr_sched.load_state_dict(saved["lr_sched"])
        state = saved["state"]
        print(f"resuming teacher {entry.key} at epoch {state['epoch']}/{sched.epochs}")
    print(f"training teacher {entry.key} on {len(x)} images from {data.source} ({device})")
    entry.start()
    if policy(device).channels_last:
        model.to(memory_format=torch.channels_last)
    bar = progress(range(state["epoch"], sched.epochs), desc="teacher", initial=state["epoch"], total=sched.epochs)
    saved_at = time.perf_counter()
    for epoch in bar:
        t0 = time.perf_counter()
        gen = generator(derive_seed(cfg["seed"], epoch, TEACHER_STRIDE), device)
        loss, acc = train_epoch(model, x, y, opt, lr_sched, sched, gen)
        val = report(model, x_val, y_val)["accuracy"]
        state["wall_s"] += time.perf_counter() - t0
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "train_loss": loss, "train_accuracy": acc, "val_accuracy": val,
                                 "wall_s": state["wall_s"]})
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.1f}")
        # A checkpoint to resume from, at most every CHECKPOINT_EVERY_S (a GPU epoch of the paper's VGG16 takes
        # about 2 s, and writing its 120 MB of weights and momenta would cost a tenth of it).
        if time.perf_counter() - saved_at >= CHECKPOINT_EVERY_S and epoch + 1 < sched.epochs:
            entry.save_tensors("resume.pt", {"model": model.state_dict(), "opt": opt.state_dict(),
                                             "lr_sched": lr_sched.state_dict(), "state": state})
            saved_at = time.perf_counter()
    model.eval()
    x_test, y_test = D.test_arrays(data, profile.test_limit)
    test_pred = predict(model, D.to_tensor(x_test, data.name, device)).argmax(1).cpu()
    test_acc = (test_pred == torch.from_numpy(y_test)).float().mean().item() * 100
    entry.save_tensors("model.pt", model.to(memory_format=torch.contiguous_format).state_dict())
    entry.save_tensors("test_pred.pt", test_pred)
    entry.finish({"test_accuracy": test_acc, "val_accuracy": state["history"][-1]["val_accuracy"],
                  "history": state["history"], "wall_s": state["wall_s"], "device": str(device), "machine": machine(device),
                  "torch_threads": torch.get_num_threads(), "data_source": data.source,
                  "train_images": len(x)})
