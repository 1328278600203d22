"""benchmarks/gpu_check.py, the one command that checks and times the book on a GPU, rehearsed on the CPU
(`--dry-run`: the tiny profile, CUDA's policy emulated with bf16 autocast), so that it cannot rot between
the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_section_in_a_dry_run(data_root, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--loop-seconds", "1",
                           "--data-root", str(data_root), "--json", str(out)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "NBGRAFT_QUIET": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["ok"]
    paths = {row["path"] for row in r["paths"]}
    assert {"teacher training", "netgraft (vmap stack)", "netgraft_paper (loop stack)", "baseline kd_inherited",
            "inversion + NetGraft on its images", "DFAD (one-stage, after two-stage)",
            "GAN (one-stage, after two-stage)"} <= paths
    assert all(row["ok"] and row["precision"] == "bf16" for row in r["paths"])
    assert r["chapter08"]["wall_s"] > 0 and r["vgg_netgraft"]["stack"] == "vmap"
    assert len(r["vgg_netgraft"]["test_accuracy"]) == 3
    assert r["teacher_loop"]["loop_images_s"] > 0 and r["teacher_loop"]["raw_bf16_images_s"] > 0
    assert 0 < r["gan"]["ratio"] < 10
    assert [t["target"] for t in r["targets"]] == ["chapter 8 fresh (s)", "mean GPU utilisation while grafting (%)",
                                                   "teacher loop / raw step rate",
                                                   "GAN one-stage / two-stage time per iteration"]
    assert "targets (dry run" in proc.stdout
