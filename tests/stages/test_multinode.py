"""Pinning by GPU type, on a simulated multi-node cluster (ray.cluster_utils.Cluster, fake GPUs
labelled with their accelerator type): each stage's actors run on a node of one of its types, the
video is made, and a pool whose type no node has is refused after the placement timeout with the
types the nodes have, rather than left waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_each_stage_runs_on_a_node_of_its_gpu_types(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "stages" / "multinode_batch.py"), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (result,) = report["results"].values()
    assert result["status"] == "done" and result["frames"] == 24
    placed = report["placed"]
    assert placed["InitChunkWorker"] == ["A100-80G"] and placed["ExtendWorker"] == ["A100-80G"]
    assert placed["RefineWorker"] == ["H200", "H200"]
    assert set(report["missing"]) == {"refine"} and "['B200']" in report["missing"]["refine"]
    assert "'A100-80G', 'H200'" in report["missing"]["refine"]
    assert report["refused"].startswith("pools={'refine': ['B200']}: must be pools a node of this Ray cluster can run")
