"""The training-data manifest: one Parquet row per video clip with its caption.

Schema (version 1): ``clip_id`` (string, unique), ``video_uri`` (string: a path relative to the
manifest's folder, or an absolute local path / ``s3://`` URI), ``caption`` (string), ``fps``
(float64, the file's frame rate), ``num_frames`` (int64), ``height``, ``width`` (int64). Users
fine-tuning on their own footage write this table; :mod:`toyworld.dataset` writes it for the
synthetic world. The file is committed atomically like every manifest.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from infra import storage
from models.errors import ConfigError

VERSION = 1
CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_uri", pa.string()), ("caption", pa.string()), ("fps", pa.float64()),
    ("num_frames", pa.int64()), ("height", pa.int64()), ("width", pa.int64()),
], metadata={b"streamingt2v.clip_manifest.version": str(VERSION).encode()})


def write_clip_manifest(uri: str, rows: Iterable[dict[str, Any]]) -> None:
    storage.write_table(uri, pa.Table.from_pylist(list(rows), schema=CLIP_SCHEMA))


def resolve_video_uri(manifest_uri: str, video_uri: str) -> str:
    """Relative video paths are relative to the manifest's folder (so a dataset can be moved)."""
    if "://" in video_uri or video_uri.startswith("/"):
        return video_uri
    return posixpath.join(posixpath.dirname(manifest_uri), video_uri)


def read_clip_manifest(uri: str) -> pa.Table:
    """The manifest with ``video_uri`` resolved; a missing column is named in the error."""
    try:
        table = storage.read_table(uri)
    except FileNotFoundError as exc:
        raise ConfigError("data", uri, "an existing clip manifest (Parquet)") from exc
    missing = [f.name for f in CLIP_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ConfigError("data", uri, f"a clip manifest with columns {CLIP_SCHEMA.names} (missing {missing})")
    table = table.select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA)
    resolved = [resolve_video_uri(uri, v) for v in table.column("video_uri").to_pylist()]
    return table.set_column(1, "video_uri", pa.array(resolved, pa.string()))
