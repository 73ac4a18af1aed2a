"""Ray resources of the three stage pools: the one config each pool's actors are created from.

A pool pins its actors to GPU types with ``num_gpus`` plus ``accelerator_types``: the GPU types
any of which may run it (Ray's names, e.g. ``H100``, ``A100-80G``), which become a label selector
on the node label Ray sets from the GPU it detects (``ray.io/accelerator-type``), and/or extra
custom resources. ``local`` runs the same code on a CPU-only laptop or CI machine; ``gpu``
matches ray_cluster.yaml (init and extend on L40S, A100-80G or H100 nodes, refine on H100 or
H200 nodes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError, require

STAGES = ("init", "extend", "refine")
ACCELERATOR_LABEL = "ray.io/accelerator-type"  # the node label Ray sets from the GPU it detects


@dataclass(frozen=True)
class PoolConfig:
    size: int = 1  # actors in the pool
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    accelerator_types: tuple[str, ...] = ()  # GPU types any of which may run the pool; () any node
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
        types = (self.accelerator_types,) if isinstance(self.accelerator_types, str) else tuple(self.accelerator_types)
        require(all(isinstance(t, str) and t and not set(t) & set(",()! ") for t in types), "accelerator_types",
                self.accelerator_types, "GPU type names such as 'H100' or 'A100-80G' (Ray's accelerator types)")
        object.__setattr__(self, "accelerator_types", types)

    def label_selector(self) -> dict[str, str]:
        """The node labels the pool's actors need: one of its GPU types."""
        if not self.accelerator_types:
            return {}
        types = self.accelerator_types
        return {ACCELERATOR_LABEL: types[0] if len(types) == 1 else f"in({','.join(types)})"}

    def runs_on(self, labels: dict[str, str], resources: dict[str, float]) -> bool:
        """Whether one of the pool's actors fits a node with these labels and total resources."""
        if self.accelerator_types and labels.get(ACCELERATOR_LABEL) not in self.accelerator_types:
            return False
        return all(resources.get(name, 0.0) + 1e-9 >= amount for name, amount in self.resource_request().items())

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options(...)``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                   "max_restarts": self.max_restarts, "max_task_retries": self.max_task_retries}
        if self.accelerator_types:
            options["label_selector"] = self.label_selector()
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def resource_request(self) -> dict[str, float]:
        """What one actor asks of a node, in the node's own resource names."""
        request = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in request.items() if v > 0}


@dataclass(frozen=True)
class ClusterConfig:
    init: PoolConfig = PoolConfig()
    extend: PoolConfig = PoolConfig()
    refine: PoolConfig = PoolConfig()
    max_videos_in_flight: int = 3  # back-pressure: how many videos may wait for a stage's free workers

    def pool(self, stage: str) -> PoolConfig:
        require(stage in STAGES, "stage", stage, f"one of {list(STAGES)}")
        return getattr(self, stage)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClusterConfig":
        unknown = set(data) - {*STAGES, "max_videos_in_flight"}
        if unknown:
            raise ConfigError("cluster config", sorted(unknown), f"keys among {[*STAGES, 'max_videos_in_flight']}")
        fields = set(PoolConfig.__dataclass_fields__)
        for stage in STAGES:
            if unknown := set(data.get(stage) or {}) - fields:
                raise ConfigError(f"{stage}", sorted(unknown), f"pool keys among {sorted(fields)}")
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

    def unplaceable(self, nodes: list[dict[str, Any]], stages: tuple[str, ...] = STAGES) -> dict[str, str]:
        """The pools of ``stages`` that no alive node of ``nodes`` (``ray.nodes()``) can run one
        actor of, each with why: on a cluster that does not scale, their actors would wait forever."""
        alive = [n for n in nodes if n.get("Alive", True)]
        have = sorted({n.get("Labels", {}).get(ACCELERATOR_LABEL, "none") for n in alive})
        return {stage: (f"needs a node with one of the GPU types {list(self.pool(stage).accelerator_types)} and "
                        f"{self.pool(stage).resource_request()}; the nodes' GPU types are {have}")
                for stage in stages
                if not any(self.pool(stage).runs_on(n.get("Labels", {}), n.get("Resources", {})) for n in alive)}


LOCAL = ClusterConfig(init=PoolConfig(size=1, num_cpus=0.5), extend=PoolConfig(size=1, num_cpus=0.5),
                      refine=PoolConfig(size=2, num_cpus=0.5))
# init and extend fit any 48-80 GB card; refine (1280x720, 24-frame chunks) wants an H100 or H200.
_GENERATE = PoolConfig(size=4, num_cpus=8, num_gpus=1, accelerator_types=("L40S", "A100-80G", "H100"),
                       torch_threads=4)
GPU = ClusterConfig(init=replace(_GENERATE, size=2), extend=_GENERATE,
                    refine=PoolConfig(size=4, num_cpus=8, num_gpus=1, accelerator_types=("H100", "H200"),
                                      torch_threads=4))
PROFILES = {"local": LOCAL, "gpu": GPU}
