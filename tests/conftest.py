"""Shared fixtures: the real CIFAR arrays (unpacked by `make data`) and a session-wide tiny output root."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("NBGRAFT_QUIET", "1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("NBGRAFT_DATA", REPO / "data"))
    if not (root / "cifar10.npz").is_file():
        pytest.fail(f"real CIFAR arrays missing under {root}: run `make data` (unpacks ../shared/data) first")
    return root


@pytest.fixture(scope="session")
def tiny_outputs(tmp_path_factory) -> Path:
    """One output root for the session, so the tiny teacher is trained once and shared."""
    return tmp_path_factory.mktemp("outputs")
