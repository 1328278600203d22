"""Sweeps on a Ray cluster: the same grid, runs and cache as the local executor, spread over workers.

Each work unit of a grid (one run, or the seeds of one grafting variant that train together) becomes one
Ray task. A task runs exactly the code the local executor runs and writes into the same experiment
cache, so on a cluster the output root must be a filesystem every node sees. The driver rewrites the
same tidy table after every finished unit, in grid order; finished runs are cached, so a sweep whose
worker died (or whose driver was stopped) finishes on the next call without redoing them.

Ray is an optional extra (`pip install -e .[cluster]`); the local executor needs none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

from ..cache import default_output_root
from ..plots import save_table
from ..profiles import get_profile
from .sweep import Grid, Run, get_grid, result_row, results_table, run_one, work_units


class SweepIncomplete(RuntimeError):
    """Some units failed on the cluster; every finished one is cached and in the table."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install -e '.[cluster]' "
                         "(or use the default local executor)") from None
    return ray


def _run_unit(unit: list[Run], profile, data_root, output_root, device, threads: int) -> list[dict]:
    """One Ray task: the unit's runs through the cache, on `threads` CPU threads."""
    import torch

    os.environ.setdefault("NBGRAFT_QUIET", "1")
    torch.set_num_threads(threads)
    seeds = tuple(r.seed for r in unit)
    return [run_one(r, profile, data_root=data_root, output_root=output_root, device=device,
                    seeds_together=seeds if len(unit) > 1 else ()) for r in unit]


def run_sweep_ray(grid: str | Grid | Mapping | Iterable[Mapping] = "default", profile="cpu", *,
                  address: str | None = None, num_cpus: int | None = None, data_root=None, output_root=None,
                  device=None, table_name: str = "06_sweep", batch_seeds: bool = True, threads_per_task: int = 1,
                  max_retries: int = 2, on_unit: Callable[[list[Run]], None] | None = None,
                  on_run: Callable[[Run, dict], None] | None = None) -> pd.DataFrame:
    """Run (or read back) every run of `grid` as Ray tasks; the table is the local executor's.

    `address`: None starts a local Ray instance (`num_cpus` slots, default all cores) unless this process
    is already connected; "auto" or "HOST:PORT" joins a running cluster. Each task takes one GPU where the
    cluster has GPUs, else `threads_per_task` CPUs. Ray retries a task whose worker died `max_retries`
    times; a unit that still fails is reported by SweepIncomplete after every other unit has finished.
    `on_unit(unit)` is called after each finished unit (progress hooks, tests), after `on_run(run, metrics)`
    for each of its runs (the local executor's hook).
    """
    ray = _ray()
    profile = get_profile(profile)
    runs = get_grid(grid, profile).runs()
    order = {r: i for i, r in enumerate(runs)}
    units = work_units(runs, batch_seeds)
    # Workers must write where the driver reads: resolve the roots here, not on each node.
    output_root = str(Path(output_root or default_output_root()).resolve())
    data_root = str(Path(data_root).resolve()) if data_root is not None else None

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 logging_level="ERROR", configure_logging=True)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(_run_unit).options(max_retries=max_retries,
                                             **({"num_gpus": 1} if gpus else {"num_cpus": threads_per_task}))
        pending = {task.remote(u, profile, data_root, output_root, device, threads_per_task): u for u in units}
        rows: dict[Run, dict] = {}
        failed: list[tuple[list[Run], Exception]] = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ref)
            try:
                done = list(zip(unit, ray.get(ref)))
            except ray.exceptions.RayError as err:
                failed.append((unit, err))
                continue
            for run, metrics in done:
                rows[run] = result_row(run, metrics, profile)
            save_table(results_table([rows[r] for r in sorted(rows, key=order.get)]), table_name, output_root)
            if on_run is not None:
                for run, metrics in done:
                    on_run(run, metrics)
            if on_unit is not None:
                on_unit(unit)
    finally:
        if started:
            ray.shutdown()
    if failed:
        def why(err):
            cause = getattr(err, "cause", None) or err
            return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
        names = "; ".join(f"{', '.join(r.label for r in u)} ({why(e)})" for u, e in failed)
        raise SweepIncomplete(f"{sum(len(u) for u, _ in failed)} of {len(runs)} runs failed on the cluster: {names}. "
                              f"The {len(rows)} finished runs are cached and in {output_root}/tables/{table_name}.csv; "
                              "run the same command again to finish the rest")
    return results_table([rows[r] for r in runs])
