"""Fingerprints of model weights: what a stored run records, so that work made by other weights
is never resumed or served as if these had made it."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

BLOCK = 8 << 20


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of one file's bytes (cached per process by path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(location: str) -> str:
    """The digest of a model's files: every file under a local directory (relative path and
    content; hidden files and caches excluded), or one local file. A location that is not on
    disk (a hub id) is named by its id and, when the local hub cache has it, the snapshot's
    revision."""
    path = Path(location)
    if path.is_file():
        return _file_digest(str(path.resolve()), *_stat(path))
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(_file_digest(str(file.resolve()), *_stat(file)).encode())
        return digest.hexdigest()
    return "hub:" + location + "@" + (_hub_revision(location) or "unknown")


def fingerprint(parts: dict[str, str | int | None]) -> str:
    """One short id for a set of named parts (model digests, preset, dtype)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


def _hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot of ``repo_id`` (None when it is not cached)."""
    try:
        from huggingface_hub import snapshot_download

        return os.path.basename(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a hub id: the id alone names it
        return None
