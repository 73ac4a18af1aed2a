"""Prompt sources: Python lists, CSV / Parquet / JSONL files, local and on S3, and their errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import storage
from infra.prompts import load_prompts
from models.errors import ConfigError

EXPECTED = [{"prompt": "a camel in the desert", "seed": 3, "num_frames": 48},
            {"prompt": "a red boat", "negative_prompt": "blurry"},
            {"prompt": "a lighthouse, at night", "seed": 7}]


def _csv(rows: list[dict]) -> bytes:
    lines = ["prompt,negative_prompt,seed,num_frames"]
    for r in rows:
        prompt = f'"{r["prompt"]}"' if "," in r["prompt"] else r["prompt"]
        lines.append(",".join([prompt, r.get("negative_prompt", ""), str(r.get("seed", "")),
                               str(r.get("num_frames", ""))]))
    return "\n".join(lines).encode()


def _parquet(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist([{"prompt": r["prompt"], "negative_prompt": r.get("negative_prompt"),
                                   "seed": r.get("seed"), "num_frames": r.get("num_frames")} for r in rows])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n\n").encode()


WRITERS = {"csv": _csv, "parquet": _parquet, "jsonl": _jsonl}


def test_python_lists():
    assert load_prompts(["a cat", {"prompt": "a dog", "seed": 2}]) == [{"prompt": "a cat"},
                                                                        {"prompt": "a dog", "seed": 2}]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_files_local_and_s3(storage_root, fmt):
    uri = storage.join(storage_root, "prompts", f"batch.{fmt}")
    storage.write_bytes(uri, WRITERS[fmt](EXPECTED))
    assert load_prompts(uri) == EXPECTED


def test_csv_with_only_a_prompt_column_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffprompt\na cat\na dog\n".encode())
    assert load_prompts(path) == [{"prompt": "a cat"}, {"prompt": "a dog"}]


@pytest.mark.integration
def test_missing_files_name_the_source(s3_bucket, tmp_path):
    for uri in (str(tmp_path / "nope.csv"), f"{s3_bucket}/nope.jsonl"):
        with pytest.raises(ConfigError, match=rf"^prompts='{uri}': must be an existing file"):
            load_prompts(uri)
    with pytest.raises(ConfigError, match=r"^prompts='p.txt': must be a file ending in one of"):
        load_prompts("p.txt")


@pytest.mark.parametrize("name,content,match", [
    ("p.csv", b"text,seed\na cat,1\n",
     r"^prompts\.prompt=None: must be a column of .*p\.csv \(found columns \['text', 'seed'\]\)"),
    ("p.csv", b"prompt\na cat\n \n", r"^prompts\[1\]\.prompt=' ': must be a non-empty string"),
    ("p.csv", b"prompt,seed\na cat,1\na dog,x\n", r"^prompts\[1\]\.seed='x': must be an integer"),
    ("p.csv", b"prompt,seed\na cat,1,2\n", r"^prompts\[0\]=.*: must be a row with one cell per column"),
    ("p.csv", b"prompt,sed\na cat,1\n", r"^prompts\[0\]\.sed='1': must be absent: not a prompt field"),
    ("p.csv", b"prompt\n", r"^prompts='.*p\.csv': must be a source with at least one prompt"),
    ("p.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b"\n',
     r"^prompts\[1\]='line 3': must be a JSON object \(.*Expecting"),  # the line is not echoed
    ("p.jsonl", b'{"prompt": "a"}\n["b"]\n', r"^prompts\[1\]='line 2': must be a JSON object"),
    ("p.jsonl", b'{"prompt": "a", "num_frames": 2.5}\n', r"^prompts\[0\]\.num_frames=2.5: must be an integer"),
    ("p.parquet", b"not parquet", r"^prompts='.*p\.parquet': must be a readable Parquet file"),
])
def test_bad_files_name_the_field(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_prompts(str(tmp_path / name))


def test_parquet_without_a_prompt_column(tmp_path):
    pq.write_table(pa.table({"caption": ["a cat"]}), tmp_path / "p.parquet")
    with pytest.raises(ConfigError, match=r"^prompts\.prompt=None: must be a column of"):
        load_prompts(str(tmp_path / "p.parquet"))


@pytest.mark.parametrize("source,match", [
    ([], r"^prompts=\[\]: must be a source with at least one prompt"),
    (["a cat", {"prompt": ""}], r"^prompts\[1\]\.prompt='': must be a non-empty string"),
    (["a cat", {"seed": 1}], r"^prompts\[1\]\.prompt=None: must be a non-empty string"),
    (["a cat", 3], r"^prompts\[1\]=3: must be a string or a mapping"),
    ([{"prompt": "a", "negative_prompt": 5}], r"^prompts\[0\]\.negative_prompt=5: must be a string"),
    ([{"prompt": "a", "seed": True}], r"^prompts\[0\]\.seed=True: must be an integer"),
])
def test_bad_lists_name_the_field(source, match):
    with pytest.raises(ConfigError, match=match):
        load_prompts(source)


@pytest.mark.parametrize("uri", ["http://example.com/p.csv", "https://example.com/p.csv?x.csv", "gs://b/p.csv",
                                 "memory://p.csv"])
def test_only_local_paths_and_s3_are_read_unless_more_schemes_are_listed(uri, monkeypatch):
    with pytest.raises(ConfigError, match=r"^prompts=.*a local path or a URI of s3://"):
        load_prompts(uri)
    monkeypatch.setenv("STREAMINGT2V_PROMPT_SCHEMES", "s3,memory")
    if uri.startswith("memory://"):
        from infra import storage

        storage.write_bytes(uri, b"prompt\na camel\n")
        assert load_prompts(uri) == [{"prompt": "a camel"}]


def test_errors_never_echo_a_files_contents(tmp_path):
    secret = "s3cret-" * 40
    path = tmp_path / "p.csv"
    path.write_text(f"prompt,{secret}\na camel,{secret},extra\n")
    with pytest.raises(ConfigError) as error:
        load_prompts(str(path))
    assert secret not in str(error.value) and len(str(error.value)) < 400
