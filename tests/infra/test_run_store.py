"""The run store keeps only the work of the models that claim it."""

from __future__ import annotations

import torch

from infra import storage
from infra.run_store import RunStore


def test_work_of_other_models_is_removed_when_a_run_claims_the_store(tmp_path):
    store = RunStore(str(tmp_path), "v1")
    assert store.claim("models-a") is False and store.models() == "models-a"
    store.save_chunk(0, torch.zeros(1, 4, 2, 8, 8))
    store.write_record({"status": "done"})
    storage.write_bytes(store.final_video, b"mp4")
    assert store.claim("models-a") is False and store.finished_chunks() == [0]  # the same models resume
    assert store.claim("models-b") is True  # other weights: nothing of theirs is resumed or served
    assert store.finished_chunks() == [] and store.read_record() is None and not storage.exists(store.final_video)
    assert store.models() == "models-b"
    unrecorded = RunStore(str(tmp_path), "v2")
    unrecorded.save_chunk(0, torch.zeros(1, 4, 2, 8, 8))  # work without a fingerprint: made by unknown models
    assert unrecorded.claim("models-b") is True and unrecorded.finished_chunks() == []
