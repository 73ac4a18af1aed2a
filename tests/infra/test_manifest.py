"""The batch manifest: schema, round trips (local and S3), older versions, re-runs, atomic commits."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import manifest as m
from infra import storage
from infra.manifest import SCHEMA, SCHEMA_VERSION, BatchManifest
from models.errors import ConfigError
from models.request import GenerationRequest

REQUESTS = [GenerationRequest("a camel in the desert", seed=1), GenerationRequest("a red boat", num_frames=48),
            GenerationRequest("a lighthouse at night", refine=False, blend="independent")]


def test_schema_has_one_typed_column_per_request_parameter():
    params = [f.name for f in dataclasses.fields(GenerationRequest) if f.name != "force"]
    assert list(m.REQUEST_COLUMNS) == params and set(params) <= set(SCHEMA.names)
    assert SCHEMA.field("seed").type == pa.int64() and SCHEMA.field("refine").type == pa.bool_()
    assert SCHEMA.field("guidance_text").type == pa.float64() and SCHEMA.field("blend").type == pa.string()
    for name in (*m.METRIC_COLUMNS, "init_s", "total_s", "error", "video_uri", "chunks_total"):
        assert SCHEMA.field(name).nullable
    assert SCHEMA.metadata[b"manifest_schema_version"] == str(SCHEMA_VERSION).encode()


def test_create_rows_from_requests():
    manifest = BatchManifest.create("b1", REQUESTS)
    assert list(manifest.rows) == [r.video_id for r in REQUESTS]
    row = manifest.row(REQUESTS[2].video_id)
    assert row["batch_id"] == "b1" and row["prompt"] == "a lighthouse at night" and row["blend"] == "independent"
    assert (row["status"], row["init_status"], row["refine_status"]) == ("pending", "pending", "skipped")
    assert row["attempts"] == 0 and row["scuts"] is None and row["schema_version"] == SCHEMA_VERSION
    assert manifest.request(REQUESTS[1].video_id) == REQUESTS[1]
    assert len(manifest.pending()) == 3


def test_write_read_round_trip(storage_root):
    uri = storage.join(storage_root, "batches", "b1", "manifest.parquet")
    manifest = BatchManifest.create("b1", REQUESTS)
    vid = REQUESTS[0].video_id
    manifest.update(vid, status="done", init_status="done", extend_status="done", refine_status="done",
                    chunks_done=9, chunks_total=9, total_s=12.5, video_uri="s3://out/x.mp4", clip_score=0.31)
    manifest.write(uri)
    back = BatchManifest.read(uri)
    assert back == manifest and back.batch_id == "b1"
    assert back.row(vid)["updated_at"] > back.row(vid)["created_at"]
    assert [r["video_id"] for r in back.pending()] == [r.video_id for r in REQUESTS[1:]]
    schema = pq.read_schema(pa.BufferReader(storage.read_bytes(uri)))
    assert schema.metadata[b"manifest_schema_version"] == str(SCHEMA_VERSION).encode() and schema.metadata[b"batch_id"] == b"b1"
    assert schema.remove_metadata().equals(SCHEMA.remove_metadata())


def test_empty_manifest_round_trips(tmp_path):
    uri = str(tmp_path / "manifest.parquet")
    BatchManifest("empty").write(uri)
    assert BatchManifest.read(uri) == BatchManifest("empty")


def _version_0_table() -> pa.Table:
    """A manifest as the first release wrote it: no version, no stage statuses, timings, URIs or metrics."""
    created = datetime(2026, 1, 2, tzinfo=timezone.utc)
    rows = [{**r.params(), "video_id": r.video_id, "batch_id": "old", "status": s, "chunks_done": c,
             "created_at": created, "updated_at": created} for r, s, c in zip(REQUESTS, ["done", "failed", "pending"],
                                                                               [9, 3, 0])]
    return pa.Table.from_pylist(rows).drop_columns(["guidance_anchor"])  # a parameter with a default


def test_reading_an_older_version_fills_missing_columns(storage_root):
    uri = storage.join(storage_root, "old.parquet")
    table = _version_0_table()
    assert "manifest_schema_version" not in str(table.schema.metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue().to_pybytes())

    manifest = BatchManifest.read(uri)
    done, failed = manifest.row(REQUESTS[0].video_id), manifest.row(REQUESTS[1].video_id)
    assert (done["status"], done["chunks_done"], failed["status"]) == ("done", 9, "failed")
    assert done["scuts"] is None and done["total_s"] is None and done["video_uri"] is None
    assert done["attempts"] == 0 and done["init_status"] == "pending" and done["guidance_anchor"] == 7.5
    assert done["schema_version"] == SCHEMA_VERSION
    manifest.write(uri)  # upgraded on the next commit
    assert pq.read_schema(pa.BufferReader(storage.read_bytes(uri))).metadata[b"manifest_schema_version"] == str(SCHEMA_VERSION).encode()


@pytest.mark.parametrize("change,match", [
    (lambda t: t.drop_columns(["created_at"]), r"created_at=None: must be a column of the version-0 manifest"),
    (lambda t: t.drop_columns(["prompt"]), r"prompt=None: must be a column"),
    (lambda t: t.set_column(t.schema.get_field_index("seed"), "seed", pa.array(["1", "x", "2"])),
     r"seed='string': must be convertible to int64"),
    (lambda t: t.set_column(t.schema.get_field_index("status"), "status", pa.array(["done", "ok", None])),
     r"status='1 nulls': must be free of nulls"),
    (lambda t: t.set_column(t.schema.get_field_index("status"), "status", pa.array(["done", "ok", "ok"])),
     r"status=\['ok'\]: must be one of \['pending'"),
    (lambda t: t.replace_schema_metadata({b"manifest_schema_version": b"99"}),
     r"schema_version=99: must be at most 2 \(the manifest was written by a newer release\)"),
])
def test_unreadable_manifests_name_the_column(change, match):
    with pytest.raises(ConfigError, match=match):
        BatchManifest.from_table(change(_version_0_table()))


def test_update_validates_and_names_the_column():
    manifest = BatchManifest.create("b1", REQUESTS)
    vid = REQUESTS[0].video_id
    with pytest.raises(ConfigError, match=r"^stauts='done': must be a manifest column"):
        manifest.update(vid, stauts="done")
    with pytest.raises(ConfigError, match=r"^status='finished': must be one of \['pending', 'running'"):
        manifest.update(vid, status="finished")
    with pytest.raises(ConfigError, match=r"^chunks_done='3': must be a int64 value"):
        manifest.update(vid, chunks_done="3")
    with pytest.raises(ConfigError, match=r"^attempts=None: must be a int64 value \(the column is not nullable\)"):
        manifest.update(vid, attempts=None)
    with pytest.raises(ConfigError, match=r"^seed=5: must be left unchanged \(a request parameter"):
        manifest.update(vid, seed=5)
    with pytest.raises(ConfigError, match=r"^video_id='nope': must be a video of batch 'b1'"):
        manifest.update("nope", status="done")
    assert manifest.row(vid)["status"] == "pending"  # nothing half-applied
    row = manifest.update(vid, status="failed", error="CUDA out of memory", attempts=1, init_s=3)
    assert (row["status"], row["error"], row["attempts"], row["init_s"]) == ("failed", "CUDA out of memory", 1, 3)


def test_rerun_keeps_finished_rows_and_resumes_the_others(tmp_path):
    uri = str(tmp_path / "manifest.parquet")
    first = BatchManifest.create("b1", REQUESTS)
    done, crashed, _ = (r.video_id for r in REQUESTS)
    first.update(done, status="done", chunks_done=9, video_uri="/out/a.mp4", clip_score=0.3)
    first.update(crashed, status="running", init_status="done", chunks_done=3, attempts=1)
    first.write(uri)
    finished_row = first.row(done)

    again = BatchManifest.read(uri)
    new = GenerationRequest("a new prompt")
    merge = again.merge_requests([*REQUESTS, new])
    assert (merge.added, merge.finished, merge.resumed, merge.dropped) == (
        [new.video_id], [done], [crashed, REQUESTS[2].video_id], [])
    assert again.row(done) == finished_row  # untouched, timestamps included
    assert again.row(crashed)["chunks_done"] == 3 and again.row(crashed)["attempts"] == 1
    assert [r["video_id"] for r in again.pending()] == [crashed, REQUESTS[2].video_id, new.video_id]

    merge = again.merge_requests([REQUESTS[0], REQUESTS[1]])  # the third prompt was taken out of the batch
    assert merge.dropped == [REQUESTS[2].video_id, new.video_id]
    assert again.row(new.video_id)["status"] == "skipped" and len(again) == 4
    assert again.merge_requests(REQUESTS).resumed == [crashed, REQUESTS[2].video_id]  # back in: pending again
    assert again.row(REQUESTS[2].video_id)["status"] == "pending"


def test_duplicate_requests_are_refused():
    with pytest.raises(ConfigError, match=r"^requests\[2\]='a camel in the desert': must be unique .* requests\[0\]"):
        BatchManifest.create("b1", [*REQUESTS[:2], GenerationRequest("a camel in the desert", seed=1)])
    with pytest.raises(ConfigError, match=r"^batch_id='': must be a non-empty string"):
        BatchManifest.create("", REQUESTS)


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failed_local_write_leaves_the_old_manifest_intact(tmp_path, monkeypatch, fail_at):
    uri = str(tmp_path / "manifest.parquet")
    old = BatchManifest.create("b1", REQUESTS)
    old.write(uri)
    before = storage.read_bytes(uri)
    new = BatchManifest.read(uri)
    new.update(REQUESTS[0].video_id, status="done")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, fail_at, crash)  # after the temporary file holds (some of) the new bytes
    with pytest.raises(OSError, match="disk full"):
        new.write(uri)
    monkeypatch.undo()
    assert storage.read_bytes(uri) == before and BatchManifest.read(uri) == old
    assert os.listdir(tmp_path) == ["manifest.parquet"]  # no temporary file left behind


def test_done_rows_that_other_models_made_are_pending_again():
    """A weights change re-runs the videos other (or unrecorded) models made; rows these models
    made stay done."""
    a, b = (GenerationRequest(p, num_frames=16) for p in ("A cat.", "A dog."))
    manifest = BatchManifest.create("b1", [a, b])
    manifest.update(a.video_id, status="done", models="m1", init_status="done", extend_status="done",
                    refine_status="done")
    manifest.update(b.video_id, status="done", models=None, init_status="done", extend_status="done",
                    refine_status="done")
    assert manifest.requeue_other_models("m1") == [b.video_id]
    assert manifest.row(a.video_id)["status"] == "done"
    assert {manifest.row(b.video_id)[c] for c in ("status", "init_status", "refine_status")} == {"pending"}
