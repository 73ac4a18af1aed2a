"""The batch manifest: one Parquet file, one row per video, the state of a whole batch.

A row holds every generation parameter of its video (so a row alone rebuilds the
:class:`~models.request.GenerationRequest` and its ``video_id``), the status of each stage,
timings, artifact URIs and, filled in later, the evaluation metrics. ``batch_id`` is repeated on
every row so that the manifests of many batches concatenate into one table for analysis.

The manifest is small (thousands of rows): it is held in memory and rewritten whole on every
commit, atomically through :func:`infra.storage.write_bytes` (local: temporary file + rename;
S3: one PUT), so a reader always sees a complete manifest. Older versions of the file are read
by adding the columns they lack; only nullable columns, or columns with a default, may ever be
added to the schema, which is what keeps every older file readable.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from infra import storage
from models.errors import ConfigError, require
from models.params import leaves
from models.request import NOT_PARAMETERS, PARAM_DEFAULTS, GenerationRequest

SCHEMA_VERSION = 2  # 2: the models column
VERSION_KEY = b"manifest_schema_version"
BATCH_KEY = b"batch_id"

STATUSES = ("pending", "running", "done", "failed", "skipped")
STAGE_STATUS_COLUMNS = ("init_status", "extend_status", "refine_status")
TIMING_COLUMNS = ("init_s", "extend_s", "refine_s", "total_s")
ARTIFACT_COLUMNS = ("chunk_latents_uri", "low_res_uri", "video_uri", "record_uri")
METRIC_COLUMNS = ("scuts", "ofs", "warp_error", "mawe", "flow_std", "clip_score", "aesthetic_score", "reid")
FINISHED = ("done", "skipped")  # overall statuses that a run does not pick up


def _arrow_type(python_type: Any) -> pa.DataType:
    if python_type is bool:  # before int: bool is a subclass of int
        return pa.bool_()
    if python_type is int:
        return pa.int64()
    if python_type is float:
        return pa.float64()
    if python_type is str or typing.get_origin(python_type) is typing.Literal:
        return pa.string()
    raise TypeError(f"no manifest column type for a request parameter of type {python_type!r}")


# One column per request parameter, typed from GenerationRequest's fields (a row holds the values run:
# a parameter the preset sets is never null).
REQUEST_TYPES: dict[str, pa.DataType] = {leaf.name: _arrow_type(leaf.base_type) for leaf in leaves(GenerationRequest)
                                         if leaf.name not in NOT_PARAMETERS}
REQUEST_COLUMNS: tuple[str, ...] = tuple(REQUEST_TYPES)

# Non-nullable columns that can be filled in when an older manifest lacks them.
DEFAULTS: dict[str, Any] = {
    **PARAM_DEFAULTS,
    "status": "pending", **{name: "pending" for name in STAGE_STATUS_COLUMNS},
    "attempts": 0, "chunks_done": 0, "schema_version": SCHEMA_VERSION,
}
# Columns update() refuses, and why.
NOT_UPDATABLE: dict[str, str] = {
    **dict.fromkeys(("video_id", "batch_id", "created_at", "schema_version"), "it identifies the row"),
    **dict.fromkeys(REQUEST_COLUMNS, "a request parameter: the video id derives from it"),
    "updated_at": "set by update() itself",
}

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def manifest_schema() -> pa.Schema:
    """The one schema of the batch manifest (version :data:`SCHEMA_VERSION`)."""
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        *(pa.field(name, type_, nullable=False) for name, type_ in REQUEST_TYPES.items()),
        pa.field("status", pa.string(), nullable=False),
        *(pa.field(name, pa.string(), nullable=False) for name in STAGE_STATUS_COLUMNS),
        pa.field("attempts", pa.int64(), nullable=False),
        pa.field("chunks_done", pa.int64(), nullable=False),
        pa.field("chunks_total", pa.int64()),  # null until a stage has planned the chunks (preset-dependent)
        pa.field("error", pa.string()),
        *(pa.field(name, pa.float64()) for name in TIMING_COLUMNS),
        *(pa.field(name, pa.string()) for name in ARTIFACT_COLUMNS),
        pa.field("models", pa.string()),  # fingerprint of the models that made the artifacts (stages.sources)
        *(pa.field(name, pa.float64()) for name in METRIC_COLUMNS),
        pa.field("created_at", _TIMESTAMP, nullable=False),
        pa.field("updated_at", _TIMESTAMP, nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
    ]
    return pa.schema(fields, metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()})


SCHEMA = manifest_schema()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_value(name: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` fits column ``name``."""
    require(name in SCHEMA.names, name, value, "a manifest column (one of " + ", ".join(SCHEMA.names) + ")")
    column = SCHEMA.field(name)
    if value is None:
        require(column.nullable, name, value, f"a {column.type} value (the column is not nullable)")
        return
    if pa.types.is_boolean(column.type):
        ok = isinstance(value, bool)
    elif pa.types.is_integer(column.type):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(column.type):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif pa.types.is_timestamp(column.type):
        ok = isinstance(value, datetime) and value.tzinfo is not None
    else:
        ok = isinstance(value, str)
    require(ok, name, value, f"a {column.type} value")
    if name == "status" or name in STAGE_STATUS_COLUMNS:
        require(value in STATUSES, name, value, f"one of {list(STATUSES)}")


def _new_row(batch_id: str, request: GenerationRequest, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
    row.update(DEFAULTS)
    row.update(request.params())
    row.update(video_id=request.video_id, batch_id=batch_id, created_at=now, updated_at=now)
    if not request.refine:
        row["refine_status"] = "skipped"
    return row


def _file_version(table: pa.Table) -> int:
    metadata = table.schema.metadata or {}
    if VERSION_KEY in metadata:
        return int(metadata[VERSION_KEY])
    if "schema_version" in table.column_names and table.num_rows:
        return int(pc.max(table.column("schema_version")).as_py())
    return 0  # the first manifests carried no version


def _conform_column(table: pa.Table, column: pa.Field, version: int) -> pa.ChunkedArray | pa.Array:
    """The column as the current schema types it, added as nulls / its default when absent."""
    n = table.num_rows
    if column.name not in table.column_names:
        if column.nullable:
            return pa.nulls(n, column.type)
        if column.name in DEFAULTS:
            return pa.array([DEFAULTS[column.name]] * n, column.type)
        raise ConfigError(column.name, None, f"a column of the version-{version} manifest (it is required; only "
                          "nullable columns or columns with a default can be added to an older manifest)")
    if column.name == "schema_version":  # the table is upgraded to the current version
        return pa.array([SCHEMA_VERSION] * n, column.type)
    values = table.column(column.name)
    try:
        values = values.cast(column.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ConfigError(column.name, str(values.type), f"convertible to {column.type} ({e})") from None
    require(column.nullable or values.null_count == 0, column.name, f"{values.null_count} nulls",
            "free of nulls (the column is not nullable)")
    return values


def conform(table: pa.Table) -> pa.Table:
    """Upgrade a manifest table of this or an older version to the current schema.

    Columns are matched by name, cast to the current types, and missing ones added (nullable
    ones as nulls, others from :data:`DEFAULTS`); columns the current schema no longer has are
    dropped. A newer version than this code knows is refused.
    """
    version = _file_version(table)
    require(version <= SCHEMA_VERSION, "schema_version", version,
            f"at most {SCHEMA_VERSION} (the manifest was written by a newer release)")
    columns = [_conform_column(table, column, version) for column in SCHEMA]
    out = pa.Table.from_arrays(columns, schema=SCHEMA)
    for name in ("status", *STAGE_STATUS_COLUMNS):
        unknown = set(out.column(name).to_pylist()) - set(STATUSES)
        require(not unknown, name, sorted(unknown), f"one of {list(STATUSES)}")
    return out


@dataclass
class Merge:
    """What :meth:`BatchManifest.merge_requests` did, by video id."""

    added: list[str] = field(default_factory=list)  # new rows, pending
    finished: list[str] = field(default_factory=list)  # done before: kept as they are
    resumed: list[str] = field(default_factory=list)  # unfinished before: kept, picked up again
    dropped: list[str] = field(default_factory=list)  # unfinished and no longer requested: now skipped


@dataclass
class BatchManifest:
    """The rows of one batch, keyed by video id, in request order."""

    batch_id: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(isinstance(self.batch_id, str) and self.batch_id.strip() != "", "batch_id", self.batch_id,
                "a non-empty string")

    @classmethod
    def create(cls, batch_id: str, requests: Iterable[GenerationRequest]) -> BatchManifest:
        """A new manifest with one pending row per request."""
        manifest = cls(batch_id)
        manifest.merge_requests(requests)
        return manifest

    @classmethod
    def from_table(cls, table: pa.Table) -> BatchManifest:
        """A manifest from a table of this or an older schema version (see :func:`conform`)."""
        metadata = table.schema.metadata or {}
        table = conform(table)
        batch_ids = set(table.column("batch_id").to_pylist())
        if BATCH_KEY in metadata:
            batch_ids.add(metadata[BATCH_KEY].decode())
        require(len(batch_ids) == 1, "batch_id", sorted(batch_ids), "one batch id per manifest")
        rows = table.to_pylist()
        ids = [row["video_id"] for row in rows]
        require(len(set(ids)) == len(ids), "video_id", sorted({i for i in ids if ids.count(i) > 1}),
                "unique within a manifest")
        return cls(batch_ids.pop(), {row["video_id"]: row for row in rows})

    @classmethod
    def read(cls, uri: str) -> BatchManifest:
        """Read a manifest (local path or s3://), upgrading an older version."""
        return cls.from_table(storage.read_table(uri))

    def to_table(self) -> pa.Table:
        schema = SCHEMA.with_metadata({**SCHEMA.metadata, BATCH_KEY: self.batch_id.encode()})
        return pa.Table.from_pylist(list(self.rows.values()), schema=schema)

    def write(self, uri: str) -> None:
        """Commit the whole manifest atomically: readers see the old file or the new one."""
        storage.write_table(uri, self.to_table())

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, video_id: str) -> dict[str, Any]:
        """A copy of one row."""
        require(video_id in self.rows, "video_id", video_id, f"a video of batch {self.batch_id!r}")
        return dict(self.rows[video_id])

    def request(self, video_id: str) -> GenerationRequest:
        """The request a row was made from. ``force``: the row was validated when it was created."""
        row = self.row(video_id)
        return GenerationRequest(**{name: row[name] for name in REQUEST_COLUMNS}, force=True)

    def update(self, video_id: str, **fields: Any) -> dict[str, Any]:
        """Set columns of one row in memory (``write`` commits them); returns the new row."""
        require(video_id in self.rows, "video_id", video_id, f"a video of batch {self.batch_id!r}")
        for name, value in fields.items():
            check_value(name, value)
            require(name not in NOT_UPDATABLE, name, value, f"left unchanged ({NOT_UPDATABLE.get(name)})")
        self.rows[video_id].update(fields, updated_at=_now())
        return self.row(video_id)

    def requeue_other_models(self, models: str) -> list[str]:
        """Done rows whose artifacts other (or unrecorded) models made are pending again: a
        change of weights regenerates them rather than keep a video these models did not make."""
        stale = [vid for vid, row in self.rows.items() if row["status"] == "done" and row["models"] != models]
        for vid in stale:
            request = self.request(vid)
            stages = {c: "pending" for c in STAGE_STATUS_COLUMNS if not (c == "refine_status" and not request.refine)}
            self.update(vid, status="pending", error=None, chunks_done=0, **stages)
        return stale

    def pending(self) -> list[dict[str, Any]]:
        """Copies of the rows a run still has to work on (status not done or skipped)."""
        return [dict(row) for row in self.rows.values() if row["status"] not in FINISHED]

    def merge_requests(self, requests: Iterable[GenerationRequest]) -> Merge:
        """Make ``requests`` the work of this batch, keeping what earlier runs did.

        A request whose video is done is kept as it is; an unfinished one (pending, running,
        failed, skipped) keeps its row, chunks and attempts so the run resumes it. Unfinished
        rows that are no longer requested are marked skipped (their history stays).
        """
        merge, now, seen = Merge(), _now(), {}
        for i, request in enumerate(requests):
            video_id = request.video_id
            require(video_id not in seen, f"requests[{i}]", request.prompt,
                    f"unique (same parameters, hence same video id {video_id}, as requests[{seen.get(video_id)}])")
            seen[video_id] = i
            row = self.rows.get(video_id)
            if row is None:
                self.rows[video_id] = _new_row(self.batch_id, request, now)
                merge.added.append(video_id)
            elif row["status"] == "done":
                merge.finished.append(video_id)
            else:
                if row["status"] == "skipped":
                    self.update(video_id, status="pending")
                merge.resumed.append(video_id)
        for video_id, row in self.rows.items():
            if video_id not in seen and row["status"] not in FINISHED:
                self.update(video_id, status="skipped")
                merge.dropped.append(video_id)
        return merge


__all__ = ["SCHEMA_VERSION", "SCHEMA", "STATUSES", "REQUEST_COLUMNS", "METRIC_COLUMNS", "DEFAULTS", "BatchManifest",
           "Merge", "manifest_schema", "conform", "check_value"]
