"""Stage actor pools on a real local Ray cluster: pipeline-parallel refine is bit-identical to the
sequential refine (test_refine_parallel.py), the batch streams through the pools, and faults stay contained."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
import yaml

from infra import storage
from infra.cluster import GPU, LOCAL, STAGES
from infra.video_io import read_video
from models.errors import ConfigError
from stages.pools import BatchScheduler, Pools
from models.request import GenerationRequest
from stages.sources import ModelSources
from stages.workers import VideoJob

REPO = Path(__file__).resolve().parents[2]
FAST = dict(num_inference_steps=2, refine_steps=5)


def test_every_gpu_pool_fits_a_node_type_of_the_cluster_config_which_ray_accepts():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(cluster))  # what `ray up` checks, against Ray's schema
    nodes = cluster["available_node_types"]
    assert cluster["head_node_type"] in nodes
    for stage in STAGES:
        pool = GPU.pool(stage)
        fitting = [name for name, node in nodes.items() if pool.runs_on(node.get("labels", {}), node["resources"])]
        assert fitting, f"no node type runs the {stage} pool ({pool.accelerator_types}, {pool.resource_request()})"
        assert cluster["head_node_type"] not in fitting  # GPU work never lands on the head
    assert GPU.refine.accelerator_types == ("H100", "H200") and GPU.refine.num_gpus == 1
    assert GPU.refine.actor_options()["label_selector"] == {"ray.io/accelerator-type": "in(H100,H200)"}


def test_a_pool_names_its_gpu_types_and_a_cluster_without_them_is_reported():
    from infra.cluster import ClusterConfig, PoolConfig

    one = PoolConfig(num_gpus=1, accelerator_types="H200")  # a YAML string is one type
    assert one.accelerator_types == ("H200",) and one.label_selector() == {"ray.io/accelerator-type": "H200"}
    assert PoolConfig().actor_options().get("label_selector") is None
    with pytest.raises(ConfigError, match="accelerator_types"):
        PoolConfig(accelerator_types=("H100,H200",))
    with pytest.raises(ConfigError, match=r"init=\['accelerator_type'\]: must be pool keys"):
        ClusterConfig.from_dict({"init": {"accelerator_type": "H100"}})
    nodes = [{"Alive": True, "Labels": {"ray.io/accelerator-type": "A100-80G"}, "Resources": {"CPU": 96, "GPU": 8}},
             {"Alive": False, "Labels": {"ray.io/accelerator-type": "H200"}, "Resources": {"CPU": 192, "GPU": 8}}]
    missing = GPU.unplaceable(nodes)
    assert set(missing) == {"refine"} and "['H100', 'H200']" in missing["refine"] and "A100-80G" in missing["refine"]


def test_local_pools_fit_two_cpus():
    assert sum(LOCAL.pool(s).num_cpus * LOCAL.pool(s).size for s in STAGES) <= 2
    assert all(LOCAL.pool(s).num_gpus == 0 for s in STAGES)


def _jobs(out, prompts, **kwargs):
    return [VideoJob(GenerationRequest(p, seed=i, **{**FAST, **kwargs}).params(), str(out))
            for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def local_pools(ray_local):
    pools = Pools.create(ModelSources(), LOCAL)
    yield pools
    pools.shutdown()


@pytest.mark.integration
def test_batch_streams_through_the_pools_and_contains_a_storage_error(local_pools, tmp_path):
    prompts = ["A camel resting on the snow field.", "Men walking in the rain.", "A squirrel in Antarctica."]
    jobs = _jobs(tmp_path, prompts, num_frames=24)
    jobs[1].store.claim(ModelSources().fingerprint())  # its work folder, made by these models
    Path(jobs[1].store.work, "extend").write_text("a file where the video's chunk folder should be")
    events: list[tuple[float, str, dict]] = []
    results = BatchScheduler(local_pools, ModelSources(),
                             on_update=lambda v, f: events.append((time.monotonic(), v, f))).run(jobs)
    ids = [j.request.video_id for j in jobs]
    assert results[ids[0]]["status"] == results[ids[2]]["status"] == "done"
    assert results[ids[1]]["status"] == "failed" and "Error" in results[ids[1]]["error"]
    for job in (jobs[0], jobs[2]):
        assert read_video(job.store.final_video).shape == (24, 128, 128, 3)
    # Pipelining: the third video's init started before the first video's refine finished.
    start_init_3 = next(t for t, v, f in events if v == ids[2] and f.get("init_status") == "running")
    end_refine_1 = next(t for t, v, f in events if v == ids[0] and f.get("refine_status") == "done")
    assert start_init_3 < end_refine_1


@pytest.mark.integration
def test_a_killed_extend_actor_is_restarted_and_the_video_completes_identically(local_pools, tmp_path):
    sources = ModelSources()
    (reference,) = _jobs(tmp_path / "reference", ["A knight riding on a horse."], num_frames=48, refine=False)
    assert BatchScheduler(local_pools, sources).run([reference])[reference.request.video_id]["status"] == "done"

    (job,) = _jobs(tmp_path / "killed", ["A knight riding on a horse."], num_frames=48, refine=False)
    killed = threading.Event()

    def kill_mid_video():  # once the actor has saved the init chunk and two extension chunks
        deadline = time.monotonic() + 120
        while len(job.store.finished_chunks()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ray.kill(local_pools.extend[0], no_restart=False)
        killed.set()

    killer = threading.Thread(target=kill_mid_video)
    killer.start()
    result = BatchScheduler(local_pools, sources).run([job])
    killer.join()
    assert killed.is_set() and result[job.request.video_id]["status"] == "done"
    assert job.store.load_low_res().tobytes() == reference.store.load_low_res().tobytes()
    assert storage.read_bytes(job.store.final_video) == storage.read_bytes(reference.store.final_video)


def test_pools_that_cannot_fit_a_fixed_cluster_are_reported():
    assert LOCAL.unmet({"CPU": 2.0}) == {}
    assert LOCAL.unmet({"CPU": 1.0}) == {"CPU": (2.0, 1.0)}
    assert set(GPU.unmet({"CPU": 1000, "GPU": 9})) == {"GPU"}
    assert GPU.unmet({"CPU": 80, "GPU": 10}) == {}


@pytest.mark.parametrize("refine", [False, True])
def test_a_video_is_done_only_when_its_final_mp4_exists(tmp_path, refine):
    """A run that stopped after the low-res frames but before the final MP4 starts again where
    the MP4 is made (extend republishes from the stored chunks; refine refines), never 'done'."""
    import numpy as np
    import torch

    from stages.pools import first_stage

    job = VideoJob(GenerationRequest("a camel", num_frames=16, refine=refine).params(), str(tmp_path))
    store = job.store
    assert first_stage(job) == "init"
    store.save_chunk(0, torch.zeros(1, 4, 16, 8, 8))
    assert first_stage(job) == "extend"
    store.save_low_res(np.zeros((16, 64, 64, 3), np.uint8))
    assert first_stage(job) == ("refine" if refine else "extend")
    storage.write_bytes(store.final_video, b"mp4")
    assert first_stage(job) == "done"
