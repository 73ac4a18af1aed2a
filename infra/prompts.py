"""Prompt sources of a batch: a Python list, or a CSV / Parquet / JSONL file, local or s3://
(other fsspec schemes only when listed in ``STREAMINGT2V_PROMPT_SCHEMES``, e.g. ``s3,gs``: a batch
parameter must not make the workers fetch arbitrary URLs). Errors name the record and never
echo a file's contents.

Every source becomes the same list of dicts with the key ``prompt`` and, where given,
``prompt_schedule``, ``init_video``, ``init_image``, ``init_frames``, ``negative_prompt``,
``seed`` and ``num_frames`` (absent keys take the request defaults). A prompt schedule is its text form or a list of [frame, prompt] pairs or of
{frame, prompt} records (a JSON list in JSONL, a list column in Parquet). Records
are numbered from 0 in the order they appear, and errors name them that way:
``prompts[3].prompt=' ': must be a non-empty string``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage
from models.errors import ConfigError, require

PROMPT_KEYS = ("prompt", "prompt_schedule", "init_video", "init_image", "init_frames", "negative_prompt", "seed",
               "num_frames")
INT_KEYS = ("seed", "num_frames", "init_frames")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

PromptSource = str | os.PathLike | Sequence[str | Mapping[str, Any]]


def load_prompts(source: PromptSource) -> list[dict[str, Any]]:
    """The prompts of ``source``: a list of strings or mappings, or the URI / path of a file."""
    if isinstance(source, (str, os.PathLike)):
        records = _read_file(os.fspath(source))
    else:
        records = [_as_record(i, item) for i, item in enumerate(source)]
    require(len(records) > 0, "prompts", source, "a source with at least one prompt")
    return [_normalise(i, record) for i, record in enumerate(records)]


def _as_record(index: int, item: Any) -> Mapping[str, Any]:
    if isinstance(item, str):
        return {"prompt": item}
    require(isinstance(item, Mapping), f"prompts[{index}]", item, "a string or a mapping with a 'prompt' key")
    return item


SCHEMES_ENV = "STREAMINGT2V_PROMPT_SCHEMES"
DEFAULT_SCHEMES = ("s3",)  # beside local paths


def allowed_schemes() -> tuple[str, ...]:
    listed = os.environ.get(SCHEMES_ENV)
    return DEFAULT_SCHEMES if listed is None else tuple(s.strip() for s in listed.split(",") if s.strip())


def _read_file(uri: str) -> list[dict[str, Any]]:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    schemes = allowed_schemes()
    require(scheme == "" or scheme in schemes, "prompts", uri,
            f"a local path or a URI of {', '.join(f'{s}://' for s in schemes) or 'no scheme'} (others: list them in "
            f"{SCHEMES_ENV})")
    extension = os.path.splitext(uri)[1].lower()
    require(extension in FORMATS, "prompts", uri, f"a file ending in one of {sorted(FORMATS)}")
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ConfigError("prompts", uri, "an existing file") from None
    return {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}[FORMATS[extension]](uri, data)


def _text(uri: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # spreadsheets often start their CSV with a byte-order mark
    except UnicodeDecodeError:
        raise ConfigError("prompts", uri, "UTF-8 text") from None


def _require_prompt_column(uri: str, columns: Sequence[str]) -> None:
    found = [str(c)[:40] for c in list(columns)[:10]] + (["..."] if len(columns) > 10 else [])
    require("prompt" in columns, "prompts.prompt", None, f"a column of {uri} (found columns {found})")


def _read_csv(uri: str, data: bytes) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(_text(uri, data), newline=""))
    _require_prompt_column(uri, reader.fieldnames or [])
    records = list(reader)
    for i, record in enumerate(records):
        # DictReader files surplus cells under the key None and pads missing ones with None
        require(None not in record and None not in record.values(), f"prompts[{i}]",
                f"a row of {len(record) + len(record.get(None) or []) - (None in record)} cells",
                f"a row with one cell per column of the header ({len(reader.fieldnames or [])} columns)")
    return records


def _read_parquet(uri: str, data: bytes) -> list[dict[str, Any]]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowInvalid as e:
        raise ConfigError("prompts", uri, f"a readable Parquet file ({e})") from None
    _require_prompt_column(uri, table.column_names)
    return table.to_pylist()


def _read_jsonl(uri: str, data: bytes) -> list[dict[str, Any]]:
    records = []
    for line_number, line in enumerate(_text(uri, data).splitlines(), start=1):
        if not line.strip():
            continue
        field = f"prompts[{len(records)}]"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(field, f"line {line_number}", f"a JSON object ({uri}: {e.msg} at column {e.colno})"
                              ) from None
        require(isinstance(record, dict), field, f"line {line_number}", f"a JSON object ({uri})")
        records.append(record)
    return records


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(field, value, "an integer") from None
    if isinstance(value, float) and value.is_integer():  # Parquet written by pandas from a column with gaps
        return int(value)
    require(isinstance(value, int) and not isinstance(value, bool), field, value, "an integer")
    return value


def _normalise(index: int, record: Mapping[str, Any]) -> dict[str, Any]:
    """One record with its keys checked, empty optional cells dropped and integers parsed."""
    name = f"prompts[{index}]"
    for key, value in record.items():
        require(key in PROMPT_KEYS, f"{name}.{key}", value,
                f"absent: not a prompt field (known: {', '.join(PROMPT_KEYS)})")
    prompt = record.get("prompt")
    require(isinstance(prompt, str) and prompt.strip() != "", f"{name}.prompt", prompt, "a non-empty string")
    out: dict[str, Any] = {"prompt": prompt}
    for key in PROMPT_KEYS[1:]:
        value = record.get(key)
        if value is None or value == "":  # an empty CSV cell or a Parquet null: the request default
            continue
        if key in INT_KEYS:
            out[key] = _as_int(f"{name}.{key}", value)
        elif key == "prompt_schedule" and isinstance(value, (list, tuple)):
            out[key] = json.dumps(list(value))  # a request reads the JSON form
        else:
            require(isinstance(value, str), f"{name}.{key}", value, "a string")
            out[key] = value
    return out


__all__ = ["PROMPT_KEYS", "PromptSource", "load_prompts"]
