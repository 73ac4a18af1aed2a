"""Pipeline-parallel refine on a real local Ray cluster is bit-identical to the sequential refine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from infra.cluster import LOCAL, PoolConfig
from infra.video_io import read_video
from stages.pools import make_pool, refine_pipeline_parallel
from stages.refine import RefineStage
from models.request import GenerationRequest
from stages.sources import ModelSources
from stages.workers import RefineWorker, VideoJob

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = dict(num_inference_steps=2, refine_steps=2)  # SDEdit steps t = 600, 100


@pytest.fixture(scope="module")
def refine_workers(ray_local):
    workers = make_pool(RefineWorker, PoolConfig(size=3, num_cpus=0.5), ModelSources())
    yield workers
    for w in workers:
        ray.kill(w)


@pytest.fixture(scope="module")
def sequential_refiner():
    sources = ModelSources()
    return RefineStage(sources.load_refiner(), sources.refine_config())


@pytest.mark.parametrize("num_frames,seed,blend,schedule", [
    (25, 0, "randomized", ""), (57, 2, "randomized", ""), (41, 3, "shared-noise", ""),
    (57, 4, "randomized", "20:A flock of doves over a lake.")])  # each refine chunk with its own prompt
def test_pipeline_parallel_refine_is_bit_identical_to_sequential(refine_workers, sequential_refiner, tmp_path,
                                                                 num_frames, seed, blend, schedule):
    request = GenerationRequest("Camera following a pack of crows flying in the sky.", num_frames=num_frames,
                                seed=seed, blend=blend, prompt_schedule=schedule, **FAST)
    job = VideoJob(request.params(), str(tmp_path))
    low_res = np.random.default_rng(seed).integers(0, 256, (num_frames, 64, 64, 3), dtype=np.uint8)
    job.store.save_low_res(low_res)
    # The single-process sequential order, with the pool's kernel configuration (one torch thread
    # per actor): CPU kernels may round differently with another thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(LOCAL.refine.torch_threads)
    try:
        expected = sequential_refiner(request, low_res)
    finally:
        torch.set_num_threads(threads)
    plan = sequential_refiner.config_for(request).plan(num_frames)
    steps = len(sequential_refiner.session(request, (1, 4, num_frames, 40, 56)).refiner.timesteps)
    assert len(plan) >= 2 and steps == 2
    for workers in (1, 2, 3):
        result = ray.get(refine_pipeline_parallel(job, plan, refine_workers[:workers], steps, return_frames=True))
        assert result["pixels"].tobytes() == expected.tobytes(), f"{workers} workers"
    assert read_video(job.store.final_video).shape == (num_frames, 128, 128, 3)


