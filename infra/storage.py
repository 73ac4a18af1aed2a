"""Artifact storage over fsspec: local paths and ``s3://`` (s3fs) behind one interface.

Writes are atomic: a reader sees the old object or the whole new one, never a torn file. On a
local filesystem the bytes go to a temporary file beside the target, are fsynced, and are renamed
over it; on object stores a single PUT is already all-or-nothing, so the object is written
directly under its final key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path

import fsspec
import fsspec.asyn
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


# --- conditional writes: what a lease needs ------------------------------------------------------

def read_versioned(uri: str) -> tuple[bytes, str] | None:
    """The object's bytes and a version token for :func:`replace_if` (S3: its ETag; local: a
    digest of the bytes), or None when it does not exist."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()
    bucket, key, _ = fs.split_path(path)

    async def get() -> tuple[bytes, str]:  # one GET: the bytes and the ETag of the same version
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return await body.read(), response["ETag"].strip('"')

    try:
        return fsspec.asyn.sync(fs.loop, get)
    except FileNotFoundError:
        return None


def create_if_absent(uri: str, data: bytes) -> bool:
    """Write ``data`` only if ``uri`` does not exist, atomically (local: an exclusive create;
    S3: a PUT with ``If-None-Match: *``). Returns whether this call created it."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _local_lock(target):
            if target.exists():
                return False
            write_bytes(uri, data)
            return True
    bucket, key, _ = fs.split_path(path)
    return _conditional_put(fs, bucket, key, data, IfNoneMatch="*")


def replace_if(uri: str, data: bytes, version: str) -> bool:
    """Replace ``uri`` with ``data`` only if it still is the version ``version`` (from
    :func:`read_versioned`), atomically (local: under an exclusive lock; S3: ``If-Match``).
    Returns whether it was replaced."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        with _local_lock(target):
            current = read_versioned(uri)
            if current is None or current[1] != version:
                return False
            write_bytes(uri, data)
            return True
    bucket, key, _ = fs.split_path(path)
    return _conditional_put(fs, bucket, key, data, IfMatch=f'"{version}"')


def _conditional_put(fs, bucket: str, key: str, data: bytes, **condition: str) -> bool:
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except Exception as error:
        if _precondition_failed(error):
            return False
        raise
    finally:
        fs.invalidate_cache(f"{bucket}/{key}")
    return True


def _precondition_failed(error: BaseException) -> bool:
    """Whether an S3 error (as s3fs raises it, or botocore's) is a failed precondition (412)."""
    if isinstance(error, FileExistsError):
        return True
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


class _local_lock:
    """An exclusive lock (flock) on a sidecar file beside ``target``, for local compare-and-swap."""

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(f".{target.name}.lock")

    def __enter__(self) -> None:
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666 & ~_UMASK)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors bytes of ``tensors`` (the same tensors always give the same bytes)."""
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def decode_tensors(data: bytes) -> dict[str, torch.Tensor]:
    return load_safetensors(data)


def save_tensors(uri: str, tensors: dict[str, torch.Tensor]) -> None:
    write_bytes(uri, encode_tensors(tensors))


def load_tensors(uri: str) -> dict[str, torch.Tensor]:
    return decode_tensors(read_bytes(uri))


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
           "load_tensors", "encode_tensors", "decode_tensors", "temp_name", "read_versioned", "create_if_absent", "replace_if"]
