"""CIFAR-10/100 as in-memory arrays, the few-shot draw and the validation pool.

Few-shot sets hold 10 to 5,000 images, so everything lives in tensors on the training device and is
augmented there: no DataLoader, no workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
DATASETS = tuple(NUM_CLASSES)
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
CLASS_NAMES_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TV_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
VAL_SEED = 20210202  # the validation pool is fixed per data set, whatever the few-shot seed


def default_data_root() -> Path:
    return Path(os.environ.get("NBGRAFT_DATA", Path(__file__).resolve().parents[1] / "data"))


@dataclass
class ImageData:
    """uint8 NHWC images and int64 labels of one data set; `source` says where they came from and
    `fingerprint` (a hash of the arrays) is part of every cache key built on them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name]


MAX_SEED = 2**31


def check_shots(n, what: str = "") -> int:
    """N, the images per class, if it is a whole number >= 1 (the command line and the chapters say the same)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what}N must be a whole number of at least 1 image per class, got {n!r}")
    return int(n)


def check_seed(seed, what: str = "") -> int:
    """A few-shot draw's seed, if it is a whole number in [0, 2^31)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"{what}a seed is a whole number in [0, 2^31), got {seed!r}")
    return int(seed)


def check_dataset(name: str) -> str:
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; nbgraft knows {', '.join(DATASETS)}")
    return key


_LOADED: dict[tuple, ImageData] = {}  # (name, root, file stamp): one version of each file


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = True) -> ImageData:
    """Load from, in order: `root/<name>.npz`, a torchvision root under `root`, torchvision's download."""
    name = check_dataset(name)
    root = Path(root) if root is not None else default_data_root()
    npz = root / f"{name}.npz"
    key = (name, str(root.resolve()), tuple(_file_stamp(npz).values()) if npz.is_file() else None)
    if key not in _LOADED:  # a file changed on disk is read again
        data = _load_uncached(name, root, download)
        if data.source.startswith("npz") and _npz_fingerprint(npz) != data.fingerprint:
            remember_fingerprint(npz, data.fingerprint)
        for old in [k for k in _LOADED if k[:2] == key[:2]]:  # an older version of the same file
            del _LOADED[old]
        _LOADED[key] = data
    return _LOADED[key]


def _load_uncached(name: str, root: Path, download: bool) -> ImageData:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the data root {root} is a file; give the folder holding {name}.npz "
                                 "(--data-root, data_root=... or NBGRAFT_DATA)")
    npz = root / f"{name}.npz"
    if npz.is_file():
        return validate(_read_npz(name, npz), npz, _npz_fingerprint(npz))
    tried = [f"{npz} ({'a folder, not a file' if npz.is_dir() else 'no such file'})"]
    if (root / _TV_FOLDER[name]).is_dir():
        return validate(_from_torchvision(name, root, download=False, source=f"torchvision root {root}"), root)
    tried.append(f"a torchvision root {root / _TV_FOLDER[name]} (no such folder)")
    if download:
        existed = root.exists()
        try:
            data = _from_torchvision(name, root, download=True, source=f"torchvision download into {root}")
        except Exception as err:  # no network, proxy, disk: all end in the one message below
            tried.append(f"torchvision's download into {root} ({type(err).__name__}: {err})")
            if not existed:  # the failed download made the folder: leave the disk as it was
                shutil.rmtree(root, ignore_errors=True)
        else:
            return validate(data, root)
    raise FileNotFoundError(
        f"could not find {name}. Tried: " + "; ".join(tried) + ". Either run "
        f"`python ../shared/data/unpack.py {root}` where the offline packs exist, put torchvision's "
        f"'{_TV_FOLDER[name]}' folder under {root}, or connect to the internet; pass another folder with "
        "data_root=... or the NBGRAFT_DATA environment variable."
    )


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _rebuild_hint(where: Path) -> str:
    return (f"rebuild it (`python ../shared/data/unpack.py {where.parent if where.suffix else where}` writes uint8 "
            "arrays x_* of shape (N, 32, 32, 3) and int64 labels y_*) or remove it to use torchvision's copy")


def _read_npz(name: str, npz: Path) -> ImageData:
    try:
        with np.load(npz, allow_pickle=False) as f:
            files = sorted(f.files)
            arrays = {k: f[k] for k in NPZ_KEYS if k in f.files}
    except PermissionError as err:
        raise PermissionError(f"{npz} cannot be read: permission denied ({err.strerror}); give your user read "
                              f"access to it (chmod a+r {npz}) or point --data-root at a copy you can read") from None
    except Exception as err:  # truncated or not a zip at all: BadZipFile, EOFError, OSError, "pickled data"
        raise ValueError(f"{npz} cannot be read as .npz arrays ({type(err).__name__}: {err}); "
                         f"{_rebuild_hint(npz)}") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{npz} lacks the arrays {missing} (it has {files}); {_rebuild_hint(npz)}")
    not_arrays = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if not_arrays:  # members stored as raw bytes rather than .npy arrays
        raise ValueError(f"{npz}: {not_arrays} are not .npy arrays; {_rebuild_hint(npz)}")
    return ImageData(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                     source=f"npz arrays {npz}")


def validate(data: ImageData, where: Path, fingerprint: str | None = None) -> ImageData:
    """Refuse arrays that would train silently into garbage: wrong dtype or layout, lengths that disagree,
    labels out of range. Returns the data with int64 labels and its fingerprint."""
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        problem = None
        if x.dtype != np.uint8:
            problem = f"x_{split} has dtype {x.dtype}, expected uint8 pixels in 0..255"
        elif x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            problem = f"x_{split} has shape {x.shape}, expected (N, 32, 32, 3) (images as rows, channels last)"
        elif y.ndim != 1 or len(y) != len(x):
            problem = f"y_{split} has shape {y.shape} for {len(x)} images"
        elif not np.issubdtype(y.dtype, np.integer):
            problem = f"y_{split} has dtype {y.dtype}, expected integer class labels"
        elif len(y) and (y.min() < 0 or y.max() >= data.num_classes):
            problem = f"y_{split} holds labels {y.min()}..{y.max()}, expected 0..{data.num_classes - 1}"
        elif len(x) == 0:
            problem = f"x_{split} is empty"
        elif split == "train" and len(absent := np.setdiff1d(np.arange(data.num_classes), np.unique(y))):
            problem = (f"y_train has no image of class(es) {absent[:10].tolist()}{' ...' if len(absent) > 10 else ''}"
                       f" of the {data.num_classes} classes of {data.name}: the labels are wrong or cut short")
        if problem:
            raise ValueError(f"{data.source}: {problem}; {_rebuild_hint(Path(where))}")
    data.y_train, data.y_test = data.y_train.astype(np.int64), data.y_test.astype(np.int64)
    data.fingerprint = fingerprint or array_fingerprint(data)
    return data


def array_fingerprint(data: ImageData) -> str:
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _file_stamp(npz: Path) -> dict:
    """What changes whenever the file's bytes can have changed: size, mtime, inode and the status-change time
    (the kernel sets ctime on every write, rename or utime, so restoring the mtime does not hide a change)."""
    st = npz.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _npz_fingerprint(npz: Path) -> str | None:
    """The arrays' hash, remembered beside the file (keyed by its stamp) so it is computed once."""
    side = npz.with_name(f".{npz.name}.fingerprint.json")
    try:
        saved = json.loads(side.read_text())
        if {k: saved.get(k) for k in ("size", "mtime_ns", "ctime_ns", "inode")} == _file_stamp(npz):
            return saved["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None  # validate() computes it; remember_fingerprint() stores it


def remember_fingerprint(npz: Path, fingerprint: str) -> None:
    try:
        npz.with_name(f".{npz.name}.fingerprint.json").write_text(
            json.dumps({**_file_stamp(npz), "sha256": fingerprint}))
    except OSError:
        pass  # a read-only data folder: the hash is recomputed next time


def _from_torchvision(name: str, root: Path, download: bool, source: str) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    tr = cls(str(root), train=True, download=download)
    te = cls(str(root), train=False, download=download)
    return ImageData(name, np.asarray(tr.data), np.asarray(tr.targets, dtype=np.int64), np.asarray(te.data),
                     np.asarray(te.targets, dtype=np.int64), source=source)


# --------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """Indices into the train split: the teacher's training part, the validation pool, the few-shot draw."""

    teacher_train: np.ndarray
    val: np.ndarray
    few_shot: np.ndarray | None = None


def validation_pool(y_train: np.ndarray, per_class: int) -> np.ndarray:
    """A fixed, class-balanced set of train indices held out for every choice we make (never the test set)."""
    rng = np.random.default_rng(VAL_SEED)
    picks = []
    for c in np.unique(y_train):
        idx = np.flatnonzero(y_train == c)
        if per_class > len(idx):
            raise ValueError(f"validation pool of {per_class} per class is larger than class {c} ({len(idx)} images)")
        picks.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(picks))


def few_shot_indices(y_train: np.ndarray, shots: int, seed: int, exclude: np.ndarray) -> np.ndarray:
    """N images per class, drawn by `seed` from the train split outside the validation pool.

    Deterministic and nested: the draw for (N, seed) is a prefix of one permutation
    per class, so 5 shots with seed s contain the 1 shot of seed s.
    """
    check_shots(shots, "shots: ")
    blocked = np.zeros(len(y_train), dtype=bool)
    blocked[exclude] = True
    rng = np.random.default_rng([seed, 7])
    picks = []
    for c in np.unique(y_train):
        idx = np.flatnonzero((y_train == c) & ~blocked)
        if shots > len(idx):
            raise ValueError(
                f"N={shots} shots is more than class {c} has outside the validation pool ({len(idx)} images); "
                f"use N <= {len(idx)}"
            )
        picks.append(rng.permutation(idx)[:shots])
    return np.concatenate(picks)


# The validation pool and the teacher's part of each data set, made once per process (read-only arrays):
# a cached sweep makes about 300 splits of the same data.
_POOLS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def make_split(data: ImageData, val_per_class: int, shots: int | None = None, seed: int = 0) -> Split:
    key = (data.name, data.fingerprint, len(data.y_train), val_per_class)
    if not data.fingerprint or key not in _POOLS:  # arrays without a fingerprint are never shared
        val = validation_pool(data.y_train, val_per_class)
        outside = np.ones(len(data.y_train), dtype=bool)
        outside[val] = False
        teacher_train = np.flatnonzero(outside)  # np.setdiff1d's result without its sort
        for a in (val, teacher_train):
            a.flags.writeable = False
        _POOLS[key] = teacher_train, val
    teacher_train, val = _POOLS[key]
    few = few_shot_indices(data.y_train, shots, seed, exclude=val) if shots is not None else None
    return Split(teacher_train, val, few)


def test_arrays(data: ImageData, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test split (its first `limit` images in tests), for reporting only."""
    return data.x_test[:limit], data.y_test[:limit]


# --------------------------------------------------------------------------- tensors
def to_tensor(x: np.ndarray, name: str, device: torch.device | str = "cpu", mean=None, std=None) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW on `device`: by the data set's channel statistics, or by the
    `mean`/`std` a network expects (a published teacher's, say)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean, std = channel_stats(MEAN[name] if mean is None else mean, STD[name] if std is None else std, t.device)
    return ((t - mean) / std).contiguous()


def channel_stats(mean, std, device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, 3, 1, 1) tensors, to normalise or restore NCHW images."""
    return (torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1),
            torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1))


def denormalise(x: torch.Tensor, name: str) -> torch.Tensor:
    mean, std = channel_stats(MEAN[name], STD[name], x.device)
    return (x * std + mean).clamp(0, 1)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and horizontal flip, for a whole batch at once."""
    n, _, h, w = x.shape
    gen_dev = generator.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gen_dev) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    b = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
    """Shuffled index batches for one epoch, drawn from `generator` (so runs replay exactly). They stay on
    the generator's device: copying each batch's indices from the host would wait for the GPU every step."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    starts = list(range(0, stop, batch_size))
    if len(starts) > 1 and stop - starts[-1] == 1:
        starts.pop()  # BatchNorm cannot train on one image: the last one joins the batch before
    for k, i in enumerate(starts):
        yield order[i : starts[k + 1] if k + 1 < len(starts) else stop]
