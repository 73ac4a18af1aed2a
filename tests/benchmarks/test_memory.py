"""The memory benchmark keeps each finished mode's figures and resumes at the mode it had not
finished (a modelscope-size mode runs for hours on CPU)."""

from __future__ import annotations

import argparse
import json
import subprocess

from benchmarks import memory


def _args(rows, dtype="bfloat16") -> argparse.Namespace:
    return argparse.Namespace(preset="modelscope", num_frames=48, device="cpu", dtype=dtype, rows=str(rows))


def test_a_finished_mode_is_kept_and_reused(tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    children = []

    def child(argv, **kwargs):
        children.append(argv)
        figures = {"low_memory": "--low-memory" in argv, "peak_rss_gib": 12.5, "video_sha256": "ab"}
        return subprocess.CompletedProcess(argv, 0, stdout="log line\n" + json.dumps(figures) + "\n")

    monkeypatch.setattr(memory.subprocess, "run", child)
    normal = memory._mode_row(_args(rows), low_memory=False)
    assert len(children) == 1 and normal["peak_rss_gib"] == 12.5 and normal["dtype"] == "bfloat16"
    assert [json.loads(line) for line in rows.read_text().splitlines()] == [normal]

    assert memory._mode_row(_args(rows), low_memory=False) == normal  # reused: no second child
    assert len(children) == 1
    memory._mode_row(_args(rows), low_memory=True)  # the other mode and another dtype are measured
    memory._mode_row(_args(rows, dtype="float32"), low_memory=False)
    assert len(children) == 3 and "--low-memory" in children[1] and "float32" in children[2]
    assert len(rows.read_text().splitlines()) == 3
