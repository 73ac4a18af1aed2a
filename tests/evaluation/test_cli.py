"""``streamingt2v evaluate``: a table or JSON for a video or a Parquet manifest; bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.cli import evaluate_main
from evaluation.metrics import METRIC_NAMES
from infra.video_io import write_mp4

FAST = ["--flow-size", "32"]


def _write_pan(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 256, size=(8, 16, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    write_mp4(np.stack([texture[:, t:t + 64] for t in range(12)]), str(path))
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [_write_pan(folder / f"v{i}.mp4", seed=i) for i in range(2)]


def test_one_video_prints_a_table_with_missing_metrics(videos, capsys):
    assert evaluate_main([videos[0], "--prompt", "a pan", *FAST]) == 0
    out, err = capsys.readouterr()
    header, row = out.strip().splitlines()
    assert header.split() == ["video", *METRIC_NAMES]
    cells = row.split()
    assert cells[0] == videos[0] and cells[1] == "0"  # one scene, no cut
    assert cells[METRIC_NAMES.index("clip_score") + 1] == "missing"
    assert "missing clip_score: no CLIP model directory given" in err


def test_manifest_evaluates_every_row_as_json(videos, tmp_path, capsys):
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"video_uri": videos, "prompt": ["a pan", "another pan"], "seed": [0, 1]}), manifest)
    assert evaluate_main([str(manifest), "--json", *FAST]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in results] == videos and [r["prompt"] for r in results] == ["a pan", "another pan"]
    assert all(set(r["metrics"]) == set(METRIC_NAMES) and r["metrics"]["ofs"] > 0 for r in results)


@pytest.mark.parametrize("args,field", [
    (["missing.mp4"], "video_or_manifest='missing.mp4'"),
    (["{video}", "--clip-model", "no/such/dir"], "clip_model='no/such/dir'"),
    (["{video}", "--flow-size", "0"], "flow_size=0"),
    (["{manifest}"], "video_uri[0]='gone.mp4'"),
])
def test_bad_input_exits_2_with_one_line(videos, tmp_path, capsys, args, field):
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"video_uri": ["gone.mp4"], "prompt": ["p"]}), manifest)
    argv = [a.format(video=videos[0], manifest=manifest) for a in args]
    assert evaluate_main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and field in err
