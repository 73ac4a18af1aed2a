"""The nightly benchmark's Parquet history (append, replace, older versions, previous run) and
its plots, local and on a moto S3 server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation import history, plots
from evaluation.metrics import METRIC_NAMES
from infra import storage
from models.errors import ConfigError

SETTINGS = dict(prompt_set="smoke", preset="tiny", num_frames=24, num_inference_steps=2, refine=False,
                refine_steps=5, blend="randomized", apm=True, cam_variant="cam", flow_size=64)
START = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)


def _run(run_id: str, night: int = 0, **settings) -> tuple[list[dict], dict]:
    run = dict(run_id=run_id, run_started_at=START + timedelta(days=night), **{**SETTINGS, **settings})
    videos = [dict(run, video_id=f"{run_id}-a", prompt="A camel.", status="done", scuts=0, mawe=2.0, total_s=10.0),
              dict(run, video_id=f"{run_id}-b", prompt="Men walking.", status="done", scuts=1, mawe=4.0, ofs=3.0),
              dict(run, video_id=f"{run_id}-c", prompt="Ants.", status="failed")]
    return videos, {**run, **history.summarize(videos)}


def _png_shape(data: bytes) -> tuple[int, ...]:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape


def test_summarize_averages_finished_videos_and_counts():
    videos, summary = _run("r1")
    assert summary["videos"] == 2 and summary["failed"] == 1
    assert summary["scuts"] == 0.5 and summary["mawe"] == 3.0
    assert summary["ofs"] == 3.0 and summary["total_s"] == 10.0  # over the videos that have it
    assert summary["clip_score"] is None  # no video has it: stays missing


def test_append_runs_then_replace_a_retried_run(storage_root):
    uri = storage.join(storage_root, "nightly", "history.parquet")
    assert history.read_history(uri).num_rows == 0
    history.append_run(uri, *_run("r1"))
    table = history.append_run(uri, *_run("r2", night=1))
    assert table.num_rows == 8
    read = history.read_history(uri)
    assert read.equals(table)
    assert read.column("kind").to_pylist() == ["video"] * 3 + ["summary"] + ["video"] * 3 + ["summary"]
    assert read.column("run_id").to_pylist() == ["r1"] * 4 + ["r2"] * 4
    assert set(METRIC_NAMES) <= set(read.column_names)
    for name in METRIC_NAMES:
        assert read.schema.field(name).type == pa.float64() and read.schema.field(name).nullable

    history.append_run(uri, *_run("r1", night=2))  # a retried append: r1's rows replaced, not duplicated
    again = history.read_history(uri)
    assert again.num_rows == 8
    assert again.column("run_id").to_pylist() == ["r2"] * 4 + ["r1"] * 4


def test_rows_are_checked_before_anything_is_written(tmp_path):
    uri = str(tmp_path / "history.parquet")
    videos, summary = _run("r1")
    with pytest.raises(ConfigError, match="mawe_typo"):
        history.append_run(uri, [{**videos[0], "mawe_typo": 1.0}], summary)
    with pytest.raises(ConfigError, match="blend"):
        history.append_run(uri, videos, {k: v for k, v in summary.items() if k != "blend"})
    with pytest.raises(ConfigError, match="run_id"):
        history.append_run(uri, videos, {**summary, "run_id": "other"})
    assert not storage.exists(uri)


def test_an_older_history_is_read_and_upgraded_on_append(tmp_path):
    uri = str(tmp_path / "history.parquet")
    current = history.append_run(uri, *_run("old"))
    # a version-0 file: no schema-version key, and without columns added since
    dropped = ("mawe_reference", "reid_score", "failed", "init_s")
    later_settings = tuple(history.SETTING_DEFAULTS)  # e.g. condition_replacement: not nullable
    old = current.drop_columns([*dropped, *later_settings]).replace_schema_metadata(None)
    pq.write_table(old, uri)

    read = history.read_history(uri)
    assert read.schema == history.SCHEMA and read.num_rows == 4
    for name in dropped:
        assert read.column(name).null_count == 4
    for name in later_settings:  # the value the older runs ran with
        assert read.column(name).to_pylist() == [history.SETTING_DEFAULTS[name]] * 4
    assert read.column("mawe").to_pylist()[:2] == [2.0, 4.0]
    table = history.append_run(uri, *_run("new", night=1))
    assert table.num_rows == 8
    written = pq.read_table(uri)
    assert written.schema.metadata[history.VERSION_KEY] == str(history.SCHEMA_VERSION).encode()


def test_a_history_without_a_required_column_or_from_a_newer_release_is_refused(tmp_path):
    table = history.append_run(str(tmp_path / "history.parquet"), *_run("r1"))
    missing = tmp_path / "missing.parquet"
    pq.write_table(table.drop_columns(["blend"]), missing)
    with pytest.raises(ConfigError, match="blend"):
        history.read_history(str(missing))
    newer = tmp_path / "newer.parquet"
    pq.write_table(table.replace_schema_metadata({history.VERSION_KEY: b"99"}), newer)
    with pytest.raises(ConfigError, match="history_schema_version=99"):
        history.read_history(str(newer))


def test_previous_summary_is_the_latest_earlier_run_with_the_same_settings(tmp_path):
    uri = str(tmp_path / "history.parquet")
    history.append_run(uri, *_run("r1", night=0))
    history.append_run(uri, *_run("shared", night=1, blend="shared-noise"))
    history.append_run(uri, *_run("r2", night=2))
    history.append_run(uri, *_run("r3", night=3))
    assert history.previous_summary(uri, "r3", SETTINGS)["run_id"] == "r2"
    assert history.previous_summary(uri, "r2", SETTINGS)["run_id"] == "r1"
    assert history.previous_summary(uri, "r1", SETTINGS) is None
    assert history.previous_summary(uri, "not-yet-appended", SETTINGS)["run_id"] == "r3"
    assert history.previous_summary(uri, "r3", {**SETTINGS, "blend": "shared-noise"})["run_id"] == "shared"
    assert history.previous_summary(uri, "r3", {**SETTINGS, "apm": False}) is None
    with pytest.raises(ConfigError, match="same_settings"):
        history.previous_summary(uri, "r3", {"no_such_setting": 1})


# --- plots of the history ------------------------------------------------------------------------

def test_metric_trends_png_has_a_panel_per_metric_with_values(tmp_path):
    uri = str(tmp_path / "history.parquet")
    for night in range(3):
        history.append_run(uri, *_run(f"r{night}", night=night))
    rows = history.summaries(history.read_history(uri), SETTINGS)
    assert [row["run_id"] for row in rows] == ["r0", "r1", "r2"]
    height, width, _ = _png_shape(plots.metric_trends_png(rows))
    assert width == 1200 and height > 100  # 3 panels wide (scuts, ofs, mawe), dpi 100
    assert _png_shape(plots.metric_trends_png([]))  # no run yet still draws


def test_worst_videos_by_mawe_then_scuts_and_their_xt_slices():
    rows = [dict(video_id="a", mawe=1.0, scuts=5), dict(video_id="b", mawe=3.0, scuts=0),
            dict(video_id="c", mawe=None, scuts=2), dict(video_id="d", mawe=3.0, scuts=1),
            dict(video_id="e", mawe=None, scuts=None)]
    assert [r["video_id"] for r in plots.worst_videos(rows, 4)] == ["d", "b", "a", "c"]
    frames = np.random.default_rng(0).integers(0, 256, (24, 32, 40, 3), dtype=np.uint8)
    assert _png_shape(plots.xt_slices_png([("a", frames), ("b", frames)]))[1] == 640
