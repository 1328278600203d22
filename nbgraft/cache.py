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
import os
import sys
import tempfile
import time
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


# Keys every finished entry of these kinds holds: an entry without them was not written by nbgraft.
REQUIRED_METRICS = {kind: ("test_accuracy", "wall_s") for kind in
                    ("teacher", "netgraft", "kd", "scratch", "kd_inherited", "scratch_inherited")}


class Entry:
    """One cached experiment."""

    def __init__(self, root: Path | str | None, kind: str, config: dict):
        self.kind = kind
        self.config = _plain(config)
        self.key = config_hash(self.config)
        self.dir = Path(root if root is not None else default_output_root()) / "cache" / kind / self.key

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def done(self) -> bool:
        """Finished and readable. A metrics file that cannot be read moves the entry aside (see quarantine)."""
        if not self.path("metrics.json").is_file():
            return False
        try:
            self.metrics()
        except DamagedEntry as err:
            self.quarantine(str(err))
            return False
        return True

    def metrics(self) -> dict:
        path = self.path("metrics.json")
        try:
            out = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedEntry(f"{path} cannot be read ({type(err).__name__}: {err})") from None
        if not isinstance(out, dict) or not out:
            raise DamagedEntry(f"{path} holds no metrics")
        missing = [k for k in REQUIRED_METRICS.get(self.kind, ()) if k not in out]
        if missing:
            raise DamagedEntry(f"{path} lacks {missing}")
        return out

    def save_tensors(self, name: str, obj: Any) -> None:
        atomic_torch_save(self.path(name), obj)

    def load_tensors(self, name: str, map_location: Any = "cpu") -> Any:
        path = self.path(name)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # truncated zip, unpickling garbage, missing file: all mean "damaged"
            raise DamagedEntry(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]})") from None

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
        self.start()
        atomic_write_json(self.path("metrics.json"), metrics)
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
