"""infra.storage and RunStore against a local S3-compatible server (moto), next to local disk."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from infra import storage
from infra.run_store import RunStore


@pytest.mark.integration
def test_s3fs_uses_the_local_endpoint(s3_server, s3_bucket):
    fs, _ = storage.filesystem(storage.join(s3_bucket, "x"))
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server
    assert fs.s3.meta.endpoint_url == s3_server


def test_bytes_round_trip_and_overwrite(storage_root):
    uri = storage.join(storage_root, "a", "b.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"first")
    storage.write_bytes(uri, b"second")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"second"
    storage.remove(uri)
    assert not storage.exists(uri)


def test_tensors_round_trip(storage_root):
    uri = storage.join(storage_root, "t.safetensors")
    tensors = {"latents": torch.randn(1, 4, 3, 8, 8), "ids": torch.arange(5)}
    storage.save_tensors(uri, tensors)
    loaded = storage.load_tensors(uri)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_run_store_round_trip(storage_root):
    store = RunStore(storage_root, "abc123")
    assert store.finished_chunks() == [] and store.load_chunk(0) is None and store.read_record() is None
    chunks = {i: torch.full((1, 4, 2, 4, 4), float(i)) for i in (0, 1, 2)}
    for i, latents in chunks.items():
        store.save_chunk(i, latents)
        assert store.finished_chunks() == list(range(i + 1))  # a listing right after a write sees it
    assert all(torch.equal(store.load_chunk(i), latents) for i, latents in chunks.items())
    store.write_record({"video_id": "abc123", "status": "done", "timings": {"total_s": 1.5}})
    assert store.read_record() == {"video_id": "abc123", "status": "done", "timings": {"total_s": 1.5}}
    assert store.chunk_uri(2) == f"{storage_root}/.work/abc123/extend/00002.safetensors"
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    store.save_low_res(frames)
    assert np.array_equal(store.load_low_res(), frames)
