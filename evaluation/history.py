"""The nightly benchmark's history: one append-only Parquet table on an fsspec URI (local or s3://).

Every run adds one row per video (``kind='video'``: its prompt, status, the paper's metrics of
Sec. 5.2 / App. D.3 and the generation timings from the batch manifest) and one summary row
(``kind='summary'``: per-metric and per-timing means over the run's finished videos, and the
counts). Each row carries the run's settings (prompt set, every request parameter such as the
preset, steps, guidance weights, the refinement blend of App. D.3 and APM on/off, the CAM variant,
the flow size and the flow estimator), so runs with the same settings can be compared
night over night.

Appending reads the table, adds the run's rows and rewrites the whole file atomically through
:func:`infra.storage.write_bytes`, like the batch manifest (infra/manifest.py): a reader sees the
old or the new table, never a torn one. Appending a run id that is already there replaces its
rows, so a retried append never duplicates a run. Concurrent appenders would race (last write
wins): one nightly run at a time (the deployment's concurrency limit).

The schema is versioned (:data:`SCHEMA_VERSION` in the file's metadata). Older files are read by
adding the nullable columns they lack; only nullable columns may ever be added to the schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from evaluation.metrics import METRIC_NAMES
from infra import storage
from infra.manifest import REQUEST_TYPES, TIMING_COLUMNS
from models.errors import ConfigError, require
from models.request import PARAM_DEFAULTS, PROMPT_FIELDS

SCHEMA_VERSION = 1
VERSION_KEY = b"history_schema_version"
KINDS = ("video", "summary")
_TIMESTAMP = pa.timestamp("us", tz="UTC")

# The settings that make two runs comparable (previous_summary's ``same_settings`` keys): the
# prompt set, every request parameter but the prompt and its schedule (the manifest's typed
# columns), the CAM variant and the flow size.
SETTINGS: dict[str, pa.DataType] = {
    "prompt_set": pa.string(), **{name: type_ for name, type_ in REQUEST_TYPES.items() if name not in PROMPT_FIELDS},
    "cam_variant": pa.string(), "flow_size": pa.int64(), "flow_estimator": pa.string(),
}
# The settings of the first histories. Every setting added since (condition_replacement, the
# guidance weights, the seed, ...) is filled in for their rows with the request default they ran with.
FIRST_SETTINGS = ("prompt_set", "preset", "num_frames", "num_inference_steps", "refine", "refine_steps", "blend",
                  "apm", "cam_variant", "flow_size")
SETTING_DEFAULTS: dict[str, object] = {
    **{name: PARAM_DEFAULTS[name] for name in SETTINGS if name in PARAM_DEFAULTS and name not in FIRST_SETTINGS},
    "flow_estimator": "farneback",  # the flow of every row written before the estimator was recorded
}
RUN_COLUMNS = ("run_id", "run_started_at", *SETTINGS)
VIDEO_COLUMNS = ("video_id", "prompt", "status")  # null on summary rows
COUNT_COLUMNS = ("videos", "failed")  # summary rows: finished and failed videos of the run; null on video rows
VALUE_COLUMNS = (*METRIC_NAMES, *TIMING_COLUMNS)  # video: its value; summary: the mean over finished videos


def history_schema() -> pa.Schema:
    """The one schema of the history (version :data:`SCHEMA_VERSION`); settings are per row
    (for a summary row ``num_frames`` is the run's parameter, for a video row its own length)."""
    fields = [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_started_at", _TIMESTAMP, nullable=False),
        *(pa.field(name, type_, nullable=False) for name, type_ in SETTINGS.items()),
        *(pa.field(name, pa.string()) for name in VIDEO_COLUMNS),
        *(pa.field(name, pa.float64()) for name in VALUE_COLUMNS),
        *(pa.field(name, pa.int64()) for name in COUNT_COLUMNS),
    ]
    return pa.schema(fields, metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()})


SCHEMA = history_schema()


def _file_version(table: pa.Table) -> int:
    return int((table.schema.metadata or {}).get(VERSION_KEY, b"0"))


def conform(table: pa.Table) -> pa.Table:
    """Upgrade a history table of this or an older version to :data:`SCHEMA`: columns matched by
    name and cast, missing nullable ones added as nulls, missing later settings with the value
    older runs had (:data:`SETTING_DEFAULTS`). A newer version is refused."""
    version = _file_version(table)
    require(version <= SCHEMA_VERSION, "history_schema_version", version,
            f"at most {SCHEMA_VERSION} (the history was written by a newer release)")
    columns = []
    for column in SCHEMA:
        if column.name in table.column_names:
            columns.append(table.column(column.name).cast(column.type))
        elif column.nullable:
            columns.append(pa.nulls(table.num_rows, column.type))
        elif column.name in SETTING_DEFAULTS:
            columns.append(pa.array([SETTING_DEFAULTS[column.name]] * table.num_rows, column.type))
        else:
            raise ConfigError(column.name, None, f"a column of the version-{version} history (it is required)")
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def read_history(uri: str) -> pa.Table:
    """The whole history in the current schema; an empty table when ``uri`` does not exist yet."""
    if not storage.exists(uri):
        return SCHEMA.empty_table()
    return conform(storage.read_table(uri))


def _check_row(index: int, row: Mapping[str, Any]) -> None:
    unknown = sorted(set(row) - set(SCHEMA.names))
    require(not unknown, f"rows[{index}]", unknown, "history columns (one of " + ", ".join(SCHEMA.names) + ")")
    required = [f.name for f in SCHEMA if not f.nullable and row.get(f.name) is None]
    require(not required, f"rows[{index}]", required, "given (required history columns)")
    require(row["kind"] in KINDS, f"rows[{index}].kind", row["kind"], f"one of {list(KINDS)}")


def _rows_table(video_rows: Sequence[Mapping[str, Any]], summary_row: Mapping[str, Any]) -> pa.Table:
    # A later setting a caller does not give had its older value (as conform fills it in).
    rows = ([{**SETTING_DEFAULTS, **row, "kind": "video"} for row in video_rows]
            + [{**SETTING_DEFAULTS, **summary_row, "kind": "summary"}])
    for index, row in enumerate(rows):
        _check_row(index, row)
    run_ids = {row["run_id"] for row in rows}
    require(len(run_ids) == 1, "run_id", sorted(run_ids), "the same on every row of a run")
    try:
        return pa.Table.from_pylist(rows, schema=SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError("rows", str(exc), "values of the history's column types") from None


def append_run(uri: str, video_rows: Sequence[Mapping[str, Any]], summary_row: Mapping[str, Any]) -> pa.Table:
    """Append one run (its video rows, then its summary row; ``kind`` is set here) and commit the
    whole history atomically. Rows of the same run id already there are replaced. Returns the
    new history."""
    new = _rows_table(video_rows, summary_row)
    run_id = summary_row["run_id"]
    old = read_history(uri)
    kept = old.filter(pc.not_equal(old.column("run_id"), run_id))
    table = pa.concat_tables([kept, new])
    storage.write_table(uri, table)
    return table


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def summarize(video_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The per-run values of a summary row: each metric and timing averaged over the finished
    videos that have it (the paper averages per-video metrics over the test set, Sec. 5.2), and
    the counts of finished and failed videos. A metric no video has stays null."""
    done = [row for row in video_rows if row["status"] == "done"]
    means = {name: _mean([row.get(name) for row in done]) for name in VALUE_COLUMNS}
    return {**means, "videos": len(done), "failed": len(video_rows) - len(done)}


def settings_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a history row (or of a run's fields)."""
    return {name: row[name] for name in SETTINGS}


def _matches(row: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    return all(row[name] == value for name, value in settings.items())


def summaries(history: pa.Table, same_settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The summary rows, oldest first, optionally only those whose settings equal ``same_settings``."""
    settings = dict(same_settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    require(not unknown, "same_settings", unknown, f"settings columns (one of {list(SETTINGS)})")
    return [row for row in history.to_pylist() if row["kind"] == "summary" and _matches(row, settings)]


def previous_summary(uri: str, before_run_id: str, same_settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest summary row appended before run ``before_run_id`` (anywhere in the history when
    that run is not in it) whose settings equal ``same_settings``; None when there is none."""
    history = read_history(uri)
    run_ids = history.column("run_id").to_pylist()
    if before_run_id in run_ids:
        history = history.slice(0, run_ids.index(before_run_id))
    matching = summaries(history, same_settings)
    return matching[-1] if matching else None


__all__ = ["SCHEMA_VERSION", "SCHEMA", "SETTINGS", "RUN_COLUMNS", "VALUE_COLUMNS", "history_schema", "conform",
           "read_history", "append_run", "summarize", "settings_of", "summaries", "previous_summary"]
