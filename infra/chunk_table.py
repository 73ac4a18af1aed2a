"""The chunk table: one Parquet row per finished low-res chunk, so that resume trusts a latent only
when its bytes are the ones that were written.

Each video's rows live in ``<out>/chunks/<video-id>.parquet`` beside the batch manifest, rewritten
whole (atomically, :mod:`infra.storage`) as each chunk finishes: a video is written by one worker
at a time, so a per-video file has one writer, and a whole table is the concatenation of the
files (:func:`read_chunk_table`), which joins to the manifest and the metrics on ``video_id``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from infra import storage

CHUNK_SCHEMA = pa.schema([
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("chunk", pa.int64(), nullable=False),  # index in the chunk plan (0: the init chunk)
    pa.field("frame_start", pa.int64()),  # the frames the chunk appends to the video: [start, stop)
    pa.field("frame_stop", pa.int64()),
    pa.field("latent_uri", pa.string(), nullable=False),
    pa.field("shape", pa.list_(pa.int64()), nullable=False),
    pa.field("dtype", pa.string(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),  # of the latent file's bytes
    pa.field("seconds", pa.float64()),  # time to make the chunk
    pa.field("attempt", pa.int64()),  # the run's attempt (manifest / job), when known
    pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
])
DIRECTORY = "chunks"


def table_uri(out: str, video_id: str) -> str:
    return storage.join(out, DIRECTORY, f"{video_id}.parquet")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rows(out: str, video_id: str) -> dict[int, dict[str, Any]]:
    """The video's chunk rows by chunk index (empty when it has none)."""
    uri = table_uri(out, video_id)
    if not storage.exists(uri):
        return {}
    return {row["chunk"]: row for row in storage.read_table(uri).to_pylist()}


def record_chunk(out: str, video_id: str, row: dict[str, Any]) -> None:
    """Add (or replace) one chunk's row in the video's table."""
    rows = read_rows(out, video_id)
    rows[row["chunk"]] = {**{name: None for name in CHUNK_SCHEMA.names}, **row, "video_id": video_id,
                          "written_at": datetime.now(timezone.utc)}
    table = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=CHUNK_SCHEMA)
    storage.write_table(table_uri(out, video_id), table)


def read_chunk_table(out: str) -> pa.Table:
    """Every video's chunk rows under ``out`` as one table (empty when none)."""
    fs, path = storage.filesystem(storage.join(out, DIRECTORY))
    if not fs.exists(path):
        return CHUNK_SCHEMA.empty_table()
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet") and not p.rsplit("/", 1)[-1]
                   .startswith("."))
    tables = [storage.read_table(storage.join(out, DIRECTORY, n.rsplit("/", 1)[-1])) for n in names]
    return pa.concat_tables([t.cast(CHUNK_SCHEMA) for t in tables]) if tables else CHUNK_SCHEMA.empty_table()
