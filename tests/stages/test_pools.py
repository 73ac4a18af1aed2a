"""Stage pool configuration: GPU types, the cluster config Ray accepts, local pools that fit CI,
and where a re-run of a video starts (the engine's runs are in test_engine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra import storage
from infra.cluster import GPU, LOCAL, STAGES
from models.errors import ConfigError
from models.request import GenerationRequest
from stages.workers import VideoJob

REPO = Path(__file__).resolve().parents[2]


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
