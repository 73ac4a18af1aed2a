"""The chunk table: a row per finished chunk (frames, latent file, shape, dtype, SHA-256, seconds,
attempt); resume trusts a latent only when its bytes match the row. Local and on S3 (moto)."""

from __future__ import annotations

import torch

from infra import storage
from infra.chunk_table import CHUNK_SCHEMA, digest, read_chunk_table
from infra.run_store import RunStore


def test_each_saved_chunk_has_its_row_and_the_table_joins_across_videos(storage_root):
    a, b = RunStore(storage_root, "video-a"), RunStore(storage_root, "video-b")
    latents = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 4, 3, 2, 2)
    a.save_chunk(0, latents, (0, 16), 1.5, attempt=1)
    a.save_chunk(1, latents + 1, (16, 24), 0.5, attempt=1)
    a.save_chunk(1, latents + 1, (16, 24), 0.7, attempt=2)  # saved again: the row is replaced
    b.save_chunk(0, latents, (0, 16))
    table = read_chunk_table(storage_root)
    assert table.schema == CHUNK_SCHEMA and table.num_rows == 3
    rows = {(r["video_id"], r["chunk"]): r for r in table.to_pylist()}
    row = rows[("video-a", 1)]
    assert (row["frame_start"], row["frame_stop"], row["shape"], row["dtype"]) == (16, 24, [2, 4, 3, 2, 2], "float32")
    assert row["attempt"] == 2 and row["seconds"] == 0.7 and row["latent_uri"] == a.chunk_uri(1)
    assert row["sha256"] == digest(storage.read_bytes(a.chunk_uri(1)))
    assert a.finished_chunks() == [0, 1] and b.finished_chunks() == [0]


def test_a_chunk_is_resumed_only_when_its_bytes_match_its_row(tmp_path):
    store = RunStore(str(tmp_path), "v")
    latents = torch.ones(1, 4, 2, 8, 8)
    store.save_chunk(0, latents, (0, 16))
    store.save_chunk(1, latents * 2, (16, 24))
    store.save_chunk(2, latents * 3, (24, 32))
    assert torch.equal(store.load_chunk(1), latents * 2)
    path = tmp_path / ".work" / "v" / "extend" / "00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a latent value
    path.write_bytes(bytes(data))
    assert store.load_chunk(1) is None  # corrupt: generated again
    (tmp_path / ".work" / "v" / "extend" / "00002.safetensors").unlink()
    assert store.load_chunk(2) is None  # missing
    storage.save_tensors(store.chunk_uri(3), {"latents": latents})  # a file no row vouches for
    assert store.load_chunk(3) is None and torch.equal(store.load_chunk(0), latents)
