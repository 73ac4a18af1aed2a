"""Ray resources of the three stage pools: the one config each pool's actors are created from.

A pool pins its actors to a GPU type with ``num_gpus`` plus an ``accelerator_type`` (Ray turns
it into the custom resource ``accelerator_type:<TYPE>`` that node types advertise, see
ray_cluster.yaml) and/or extra custom resources. ``local`` runs the same code on a CPU-only
laptop or CI machine; ``gpu`` matches ray_cluster.yaml (init/extend on A100/H100-class nodes,
refine on the high-memory H200 nodes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError, require

STAGES = ("init", "extend", "refine")


@dataclass(frozen=True)
class PoolConfig:
    size: int = 1  # actors in the pool
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    accelerator_type: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 2  # an actor that dies is started again ...
    max_task_retries: int = 2  # ... and its unfinished calls are retried (they resume from storage)
    torch_threads: int = 1

    def __post_init__(self) -> None:
        require(self.size >= 1, "size", self.size, "an integer >= 1")
        require(self.num_cpus >= 0 and self.num_gpus >= 0, "num_cpus/num_gpus", (self.num_cpus, self.num_gpus),
                "non-negative numbers")
        require(self.max_restarts >= -1 and self.max_task_retries >= -1, "max_restarts/max_task_retries",
                (self.max_restarts, self.max_task_retries), "integers >= -1 (-1: unlimited)")
        require(self.torch_threads >= 1, "torch_threads", self.torch_threads, "an integer >= 1")

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options(...)``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                   "max_restarts": self.max_restarts, "max_task_retries": self.max_task_retries}
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def resource_request(self) -> dict[str, float]:
        """What one actor asks of a node, in the node's own resource names."""
        request = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        if self.accelerator_type:
            request[f"accelerator_type:{self.accelerator_type}"] = 0.001  # Ray's convention: any amount
        return {k: v for k, v in request.items() if v > 0}


@dataclass(frozen=True)
class ClusterConfig:
    init: PoolConfig = PoolConfig()
    extend: PoolConfig = PoolConfig()
    refine: PoolConfig = PoolConfig()
    max_videos_in_flight: int = 3  # per stage queue bound: how many videos a stage may hold at once

    def pool(self, stage: str) -> PoolConfig:
        require(stage in STAGES, "stage", stage, f"one of {list(STAGES)}")
        return getattr(self, stage)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClusterConfig":
        unknown = set(data) - {*STAGES, "max_videos_in_flight"}
        if unknown:
            raise ConfigError("cluster config", sorted(unknown), f"keys among {[*STAGES, 'max_videos_in_flight']}")
        pools = {s: PoolConfig(**data[s]) for s in STAGES if s in data}
        return cls(**pools, **({"max_videos_in_flight": data["max_videos_in_flight"]}
                               if "max_videos_in_flight" in data else {}))

    @classmethod
    def load(cls, name_or_path: str) -> "ClusterConfig":
        """A named profile (``local``, ``gpu``) or a YAML file with the same keys."""
        if name_or_path in PROFILES:
            return PROFILES[name_or_path]
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError("pools", name_or_path, f"one of {sorted(PROFILES)} or a YAML file")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def unmet(self, available: dict[str, float], stages: tuple[str, ...] = STAGES) -> dict[str, tuple[float, float]]:
        """Resources the pools of ``stages`` need in total that ``available`` (e.g.
        ``ray.cluster_resources()``) lacks, as {name: (needed, available)}. On a fixed-size
        cluster such pools would wait forever for their actors."""
        needed: dict[str, float] = {}
        for stage in stages:
            pool = self.pool(stage)
            for name, amount in pool.resource_request().items():
                needed[name] = needed.get(name, 0.0) + amount * pool.size
        return {k: (v, available.get(k, 0.0)) for k, v in needed.items() if available.get(k, 0.0) + 1e-9 < v}


LOCAL = ClusterConfig(init=PoolConfig(size=1, num_cpus=0.5), extend=PoolConfig(size=1, num_cpus=0.5),
                      refine=PoolConfig(size=2, num_cpus=0.5))
# init / extend fit any 80 GB card (A100-80G or H100 node types both offer memory_gb:80);
# refine is pinned to the high-memory H200 type.
_GPU_80G = PoolConfig(size=4, num_cpus=8, num_gpus=1, resources={"memory_gb:80": 1}, torch_threads=4)
GPU = ClusterConfig(init=replace(_GPU_80G, size=2), extend=_GPU_80G,
                    refine=PoolConfig(size=4, num_cpus=8, num_gpus=1, accelerator_type="H200",
                                      resources={"memory_gb:141": 1}, torch_threads=4))
PROFILES = {"local": LOCAL, "gpu": GPU}
