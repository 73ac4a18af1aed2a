"""Artifact storage over fsspec: local paths and ``s3://`` (s3fs) behind one interface.

Writes are atomic: a reader sees the old object or the whole new one, never a torn file. On a
local filesystem the bytes go to a temporary file beside the target, are fsynced, and are renamed
over it; on object stores a single PUT is already all-or-nothing, so the object is written
directly under its final key.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


_UMASK = os.umask(0)
os.umask(_UMASK)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files follow the umask
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def write_file(uri: str, local_path: str | Path) -> None:
    """Copy a finished local file to ``uri`` atomically."""
    write_bytes(uri, Path(local_path).read_bytes())


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def save_tensors(uri: str, tensors: dict[str, torch.Tensor]) -> None:
    write_bytes(uri, save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_tensors(uri: str) -> dict[str, torch.Tensor]:
    return load_safetensors(read_bytes(uri))


def write_table(uri: str, table: pa.Table) -> None:
    """Write ``table`` as one Parquet object, atomically (see the module docstring)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(uri, sink.getvalue().to_pybytes())


def read_table(uri: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(read_bytes(uri)))


def temp_name(suffix: str = "") -> str:
    return f"{uuid.uuid4().hex}{suffix}"


__all__ = ["filesystem", "join", "write_bytes", "write_file", "read_bytes", "exists", "remove", "save_tensors",
           "load_tensors", "temp_name"]
