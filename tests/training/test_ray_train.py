"""Ray Train: one CPU worker on a clip manifest in S3 (moto), checkpoints in S3, resume that
continues the step count and ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_safetensors

from infra import storage
from toyworld.dataset import write_clip_dataset
from training.data import local_batches
from training.ray_train import RayTrainSettings, latest_ray_checkpoint, train_on_ray
from training.run import TrainConfig, TrainingRun

pytestmark = pytest.mark.integration


def test_train_resume_and_match_an_uninterrupted_run(ray_local, s3_bucket, tiny_base_dir):
    data = write_clip_dataset(storage.join(s3_bucket, "clips"), num_clips=3, seconds=2.0, fps=30, size=64)
    run_dir = storage.join(s3_bucket, "run")
    config = TrainConfig(stage="base", steps=2, init=tiny_base_dir, data=data, fps=10, batch_size=2, lr=1e-3,
                         checkpoint_every=2, seed=7)
    settings = RayTrainSettings(num_workers=1, cpus_per_worker=1, report_every=1)

    first = train_on_ray(config, run_dir, settings=settings)  # "crashes" after step 2
    assert first["step"] == 2
    assert latest_ray_checkpoint(run_dir)[1] == 2

    out = storage.join(s3_bucket, "model")
    resumed = train_on_ray(TrainConfig(**{**config.__dict__, "steps": 4}), run_dir, out, settings)
    assert resumed["step"] == 4
    uri, step = latest_ray_checkpoint(run_dir)
    assert step == 4
    state = json.loads(storage.read_bytes(storage.join(uri, "training_state.json")))
    assert [h[0] for h in state["history"]] == [1, 2, 3, 4]
    assert storage.exists(storage.join(out, "unet", "config.json"))

    # An uninterrupted in-process run (same data path, one thread like the Ray worker) ends
    # with the same losses and the same bits as the crashed-and-resumed Ray run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = TrainingRun(TrainConfig(**{**config.__dict__, "steps": 4}))
        batches = local_batches(reference.source(), config.batch_size)
        for _ in range(4):
            reference.train_step(*next(batches))
    finally:
        torch.set_num_threads(threads)
    assert [list(h) for h in reference.history] == state["history"]
    trained = load_safetensors(storage.read_bytes(storage.join(uri, "trainable.safetensors")))
    expected = reference.trainable_state()
    assert trained.keys() == expected.keys() and len(trained) > 0
    assert all(torch.equal(trained[k], expected[k]) for k in expected)
