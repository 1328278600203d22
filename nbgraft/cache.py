"""The experiment cache: one folder per config hash under `outputs/cache/<kind>/`, written atomically.

A finished entry holds `config.json`, `metrics.json` and its checkpoints; `metrics.json` is written
last, so its presence means "done". An unfinished entry may hold `resume.pt` to continue from.
Files are written atomically and readable by others (a cache can be shared). An entry damaged from
outside (a truncated copy, a full disk) is moved aside, kept, with a warning, and computed again.
Two processes asking for the same entry take turns: the second waits for the first, then reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch


class DamagedEntry(RuntimeError):
    """A cache file exists but cannot be read back."""


class CacheLocked(RuntimeError):
    """Another process holds an entry for longer than we are willing to wait."""


def default_output_root() -> Path:
    return Path(os.environ.get("NBGRAFT_OUTPUTS", Path(__file__).resolve().parents[1] / "outputs"))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):  # a class may keep some fields out of its keys (GraftSchedule.cache_fields)
        return _plain(obj.cache_fields() if hasattr(obj, "cache_fields") else dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: dict) -> str:
    blob = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {path.parent} is a file, not a folder (check --output-root)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a shared cache must be readable
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_plain(obj), indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def warn(message: str) -> None:
    print(f"nbgraft: warning: {message}", file=sys.stderr, flush=True)


# What a finished run's metrics hold (numbers, finite, not text) whatever its method: entries of runs ask for them.
RUN_METRICS = ("test_accuracy", "test_agreement", "val_accuracy", "wall_s")
NOT_DAMAGE = (MemoryError, PermissionError, torch.OutOfMemoryError)  # a good file read at a bad moment
BOOKKEEPING = ("files", "cache_key", "finished_at")  # what `finish` adds to every entry's metrics


def check_metrics(required, metrics, where, key: str | None = None) -> dict:
    """`metrics` if it holds the `required` numbers and was stored under `key`; DamagedEntry saying why not."""
    if not isinstance(metrics, dict) or not metrics:
        raise DamagedEntry(f"{where} holds no metrics")
    if key is not None and isinstance(metrics.get("cache_key"), str) and metrics["cache_key"] != key:
        raise DamagedEntry(f"{where} belongs to the entry {metrics['cache_key']}, not {key}")
    missing = [k for k in required if k not in metrics]
    if missing:
        raise DamagedEntry(f"{where} is not a finished run: it lacks {missing}")
    bad = [k for k in required if isinstance(metrics[k], bool)
           or not isinstance(metrics[k], (int, float)) or not math.isfinite(metrics[k])]
    if bad:
        raise DamagedEntry(f"{where} is not a finished run: {', '.join(f'{k}={metrics[k]!r}' for k in bad)} "
                           "should be numbers")
    return metrics


_VERIFIED: set[tuple] = set()  # checkpoints whose archive was checked in this process: (path, size, mtime)


def verify_checkpoint(path: Path, size: int | None = None) -> None:
    """DamagedEntry unless `path` is a whole torch archive (every member's CRC checked, once per process)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DamagedEntry(f"{path} is missing") from None
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    if stamp in _VERIFIED:
        return
    if size is not None and st.st_size != size:
        raise DamagedEntry(f"{path} holds {st.st_size} bytes, {size} were written")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except NOT_DAMAGE:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise DamagedEntry(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise DamagedEntry(f"{path} is corrupt (member {bad} fails its checksum)")
    _VERIFIED.add(stamp)


def to_device(obj: Any, device: Any) -> Any:
    """Tensors of a loaded object (nested dicts, lists, tuples) moved to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


class Entry:
    """One cached experiment. `metrics`: numbers its finished record must hold; `files`: checkpoints it must
    hold when its record predates the list `finish` writes (the owner of the kind knows both)."""

    def __init__(self, root: Path | str | None, kind: str, config: dict | None, *, metrics=(), files=(),
                 key: str | None = None):
        self.kind, self.required, self.required_files = kind, tuple(metrics), tuple(files)
        self.config = None if config is None else _plain(config)
        self.key = key if key is not None else config_hash(self.config)
        self.dir = Path(root if root is not None else default_output_root()) / "cache" / kind / self.key

    @classmethod
    def stored(cls, root: Path | str | None, kind: str, key: str, **requirements) -> Entry:
        """The entry a finished run's metrics name (`metrics["cache_key"]`), without its config."""
        return cls(root, kind, None, key=key, **requirements)

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def done(self) -> bool:
        """Finished, readable, with every checkpoint whole. A damaged entry is moved aside (see quarantine)."""
        if not self.path("metrics.json").is_file():
            return False
        try:
            self.verify()
        except DamagedEntry as err:
            self.quarantine(str(err))
            return False
        return True

    def verify(self) -> dict:
        """The metrics, after checking them and the checkpoints they list (DamagedEntry if anything is off)."""
        metrics = self.metrics()
        files = metrics.get("files")
        if not isinstance(files, dict):
            files = {name: None for name in self.required_files}
        for name, size in files.items():
            verify_checkpoint(self.path(name), size if isinstance(size, int) else None)
        return metrics

    def metrics(self) -> dict:
        path = self.path("metrics.json")
        try:
            out = json.loads(path.read_text())
        except NOT_DAMAGE:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedEntry(f"{path} cannot be read ({type(err).__name__}: {err})") from None
        return check_metrics(self.required, out, path, self.key)

    def save_tensors(self, name: str, obj: Any) -> None:
        atomic_torch_save(self.path(name), obj)

    def load_tensors(self, name: str, map_location: Any = "cpu") -> Any:
        """Read a checkpoint on the CPU (a file that fails there is damaged), then move it to `map_location`:
        a device that cannot take it (unknown, out of memory) is an error of its own, never damage."""
        path = self.path(name)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except NOT_DAMAGE:
            raise
        except Exception as err:  # truncated zip, unpickling garbage, missing file: all mean "damaged"
            raise DamagedEntry(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]})") from None
        return obj if str(map_location) == "cpu" else to_device(obj, map_location)

    def quarantine(self, why: str) -> Path:
        """Move the whole entry aside (kept for inspection, never deleted) so it is computed again."""
        k = 0
        while (dest := self.dir.with_name(f"{self.key}.damaged-{k}")).exists():
            k += 1
        os.replace(self.dir, dest)
        warn(f"{why}; moved the entry to {dest} and computing it again")
        return dest

    def start(self) -> None:
        if not self.path("config.json").is_file():
            atomic_write_json(self.path("config.json"), self.config)

    def finish(self, metrics: dict) -> dict:
        """Write the metrics (last: their presence means done), with the checkpoints' sizes under "files", the
        entry's key and when it finished (so a reader can tell a fresh result from a cached one)."""
        self.start()
        files = {p.name: p.stat().st_size for p in sorted(self.dir.glob("*.pt")) if p.name != "resume.pt"}
        atomic_write_json(self.path("metrics.json"), {**metrics, "files": files, "cache_key": self.key,
                                                      "finished_at": time.time()})
        self.path("resume.pt").unlink(missing_ok=True)
        return self.metrics()

    @contextlib.contextmanager
    def lock(self, timeout_s: float | None = None):
        """Hold this entry while computing it: another process asking for it waits here, then finds it done."""
        path = self.dir.with_name(f".{self.key}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.done:  # a finished entry is only being read: no news for the user
                    warn(f"another process is computing {self.dir}; waiting for it")
                t0 = time.monotonic()
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                            raise CacheLocked(f"{self.dir} is still being computed by another process after "
                                              f"{timeout_s:.0f} s") from None
                        time.sleep(0.5)
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class Memo:
    """What this process already computed, by key, keeping the `size` most recent (a teacher, a data split, a
    set of activations): a cached sweep asks for the same few hundreds of times."""

    def __init__(self, size: int):
        self.size, self.items = size, {}

    def get(self, key, compute):
        """The value for `key`, computed by `compute()` the first time."""
        if key not in self.items:
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = compute()
        return self.items[key]

    def clear(self) -> None:
        self.items.clear()


def cached(kind: str, config: dict, compute, output_root: Path | str | None = None) -> dict:
    """compute() -> metrics (a JSON-able dict), run once per config and read back after that.

    For a computation that has no cached entry of its own, e.g. a notebook's demonstration run: its
    config must name everything its result depends on (teacher key, data draw, schedule, architecture)."""
    entry = Entry(output_root, kind, config)
    if entry.done:
        return entry.metrics()
    with entry.lock():
        if entry.done:
            return entry.metrics()
        return entry.finish(compute())
