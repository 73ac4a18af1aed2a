"""A real small batch on a simulated multi-node cluster, run by tests/stages/test_multinode.py in
its own process (it starts its own Ray cluster): a head without GPUs, a node of two fake A100-80G
GPUs and a node of two fake H200 GPUs, each labelled with its accelerator type as Ray labels real
GPU nodes. The batch runs through the engine (stages/engine.py); the workers compute on CPU. Prints, as JSON, the batch's results, the accelerator type
of the node each live stage actor runs on (Ray's state API), and what ``unplaceable`` says of a
pool whose GPU type no node has.

    python tests/stages/multinode_batch.py OUT_DIR
"""
import json
import sys

import ray
from ray.cluster_utils import Cluster

from infra.cluster import ClusterConfig, PoolConfig
from models.request import GenerationRequest
from models.errors import ConfigError
from stages.engine import connect_engine, follow_videos, stop_engine
from stages.pools import wait_until_placeable
from stages.sources import ModelSources
from stages.workers import VideoJob

out = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1, num_gpus=2, labels={"ray.io/accelerator-type": "A100-80G"})
cluster.add_node(num_cpus=1, num_gpus=2, labels={"ray.io/accelerator-type": "H200"})
ray.init(address=cluster.address, log_to_driver=False)
gen = dict(num_cpus=0.25, num_gpus=0.5, accelerator_types=("L40S", "A100-80G", "H100"))
config = ClusterConfig(init=PoolConfig(size=1, **gen), extend=PoolConfig(size=1, **gen),
                       refine=PoolConfig(size=2, num_cpus=0.25, num_gpus=0.5, accelerator_types=("H100", "H200")))
b200 = ClusterConfig(refine=PoolConfig(num_gpus=0.5, accelerator_types=("B200",)))
missing = b200.unplaceable(ray.nodes())
try:  # what a batch does before it creates the pools: a clear error after the timeout, no hang
    wait_until_placeable(b200, ("init", "extend", "refine"), timeout_s=1.0, poll_s=0.2)
    refused = None
except ConfigError as error:
    refused = str(error)
sources = ModelSources()
engine = connect_engine(sources, config)
job = VideoJob(GenerationRequest("a red circle moving left on a striped background", num_frames=24,
                                 num_inference_steps=1, refine_steps=2).params(), out)
ray.get(engine.submit.remote([job], "batch", "multinode"))
results = {vid: {"status": snap["status"], "error": snap["error"], "frames": snap["frames"]}
           for vid, snap in follow_videos(engine, [job.request.video_id], 600).items()}
from ray.util.state import list_actors

labels = {n["NodeID"]: n["Labels"].get("ray.io/accelerator-type") for n in ray.nodes()}
placed = {}
for actor in list_actors(filters=[("state", "=", "ALIVE")]):
    placed.setdefault(actor.class_name, []).append(labels.get(actor.node_id))
print(json.dumps({"results": results, "placed": placed, "missing": missing, "refused": refused}))
stop_engine()
ray.shutdown()
cluster.shutdown()
