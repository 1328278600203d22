"""The Ray executor on a local 2-CPU Ray instance: the same rows as the local executor, and a worker
killed mid-sweep loses no finished row while a re-run finishes the rest."""

from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest
import torch

from nbgraft.runs import sweep as S

ray = pytest.importorskip("ray", reason="the Ray executor is tested where the cluster extra is installed")
psutil = pytest.importorskip("psutil")
from nbgraft.runs.cluster import SweepIncomplete, run_sweep_ray  # noqa: E402

GRID = {"datasets": "cifar10", "shots": [1, 2], "seeds": [0, 1], "methods": ["netgraft"]}  # 4 runs, 4 units
KILL_GRID = {"datasets": "cifar10", "shots": [1, 2], "seeds": [0, 1, 2], "methods": ["netgraft"]}  # 6 units
SAME = ["teacher", "dataset", "shots", "seed", "method", "profile", "overrides", "cache_key", "schedule",
        "test_accuracy", "test_agreement", "val_accuracy", "teacher_test_accuracy"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_table(data_root, tmp_path_factory):
    """The grid through the local executor, one thread per run like each Ray task (its teacher is reused)."""
    root = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = S.run_sweep(GRID, "tiny", data_root=data_root, output_root=root, device="cpu", batch_seeds=False)
    finally:
        torch.set_num_threads(threads)
    return root, table


def _root_with_teacher(local_root, tmp_path_factory, name):
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(local_root / "cache" / "teacher", root / "cache" / "teacher")
    return root


def test_ray_rows_equal_local_rows(local_ray, local_table, data_root, tmp_path_factory):
    local_root, local = local_table
    root = _root_with_teacher(local_root, tmp_path_factory, "ray")
    seen = []  # through the sweep's own entry point, with its per-run hook
    table = S.run_sweep(GRID, "tiny", data_root=data_root, output_root=root, device="cpu", batch_seeds=False,
                        table_name="sweep_ray", executor="ray", on_run=lambda run, m: seen.append(m["cache_key"]))
    assert len(table) == 4 and table["cache_key"].is_unique
    assert sorted(seen) == sorted(table["cache_key"])
    pd.testing.assert_frame_equal(table[SAME], local[SAME])  # trained apart, on the same thread count
    assert pd.read_csv(root / "tables" / "sweep_ray.csv")[["cache_key"]].equals(table[["cache_key"]])


def _kill_a_busy_worker(timeout_s=60.0) -> int:
    """SIGKILL one Ray worker while it executes a unit (its process title names the task)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            if (p.info["cmdline"] or [""])[0].startswith("ray::_run_unit"):
                p.kill()
                return p.pid
        time.sleep(0.05)
    raise AssertionError("no Ray worker was executing a unit")


def test_killed_worker_loses_no_finished_row_and_rerun_finishes(local_ray, local_table, data_root,
                                                                 tmp_path_factory):
    root = _root_with_teacher(local_table[0], tmp_path_factory, "ray_kill")
    kw = {"data_root": data_root, "output_root": root, "device": "cpu", "batch_seeds": False, "table_name": "kill"}
    killed = []

    def kill_once(unit):
        if not killed:
            killed.append(_kill_a_busy_worker())

    with pytest.raises(SweepIncomplete, match="run the same command again"):
        run_sweep_ray(KILL_GRID, "tiny", max_retries=0, on_unit=kill_once, **kw)
    partial = pd.read_csv(root / "tables" / "kill.csv")
    assert killed and 1 <= len(partial) < 6

    assert len(run_sweep_ray(KILL_GRID, "tiny", **kw)) == 6
    again = pd.read_csv(root / "tables" / "kill.csv")
    assert len(again) == 6
    # Every row finished before the kill comes back unchanged, read from the cache (same wall time).
    merged = partial.merge(again, on=["shots", "seed"], suffixes=("_before", "_after"))
    assert len(merged) == len(partial)
    for col in ("cache_key", "test_accuracy", "wall_s"):
        assert (merged[f"{col}_before"] == merged[f"{col}_after"]).all(), col
