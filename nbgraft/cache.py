"""The experiment cache: one folder per config hash under `outputs/cache/<kind>/`, written atomically.

A finished entry holds `config.json`, `metrics.json` and its checkpoints; `metrics.json` is written
last, so its presence means "done". An unfinished entry may hold `resume.pt` to continue from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def default_output_root() -> Path:
    return Path(os.environ.get("NBGRAFT_OUTPUTS", Path(__file__).resolve().parents[1] / "outputs"))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return _plain(dataclasses.asdict(obj))
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
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


class Entry:
    """One cached experiment."""

    def __init__(self, root: Path | str | None, kind: str, config: dict):
        self.config = _plain(config)
        self.key = config_hash(self.config)
        self.dir = Path(root if root is not None else default_output_root()) / "cache" / kind / self.key

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def done(self) -> bool:
        return self.path("metrics.json").is_file()

    def metrics(self) -> dict:
        return json.loads(self.path("metrics.json").read_text())

    def save_tensors(self, name: str, obj: Any) -> None:
        atomic_torch_save(self.path(name), obj)

    def load_tensors(self, name: str, map_location: Any = "cpu") -> Any:
        return torch.load(self.path(name), map_location=map_location, weights_only=False)

    def start(self) -> None:
        if not self.path("config.json").is_file():
            atomic_write_json(self.path("config.json"), self.config)

    def finish(self, metrics: dict) -> dict:
        self.start()
        atomic_write_json(self.path("metrics.json"), metrics)
        self.path("resume.pt").unlink(missing_ok=True)
        return self.metrics()
