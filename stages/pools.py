"""Ray wiring: the stage workers as actor pools and the pipeline-parallel refine; the engine
(stages/engine.py) owns the pools and schedules the videos over them.

Why actors fed by bounded queues rather than Ray Data ``map_batches``: a video is not a row that
flows through three maps. Extension is a long, resumable loop whose every chunk is checkpointed;
refinement of one video fans its chunks out over several actors with step-level dependencies;
and each video needs its own status, error and retry accounting. A scheduling loop over
``ray.wait`` expresses all three directly, while per-stage bounds on videos in flight give the
same back-pressure Ray Data would: no stage holds more than ``max_videos_in_flight`` videos, and
tensors travel between actors through the object store or storage, never through a driver.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import ray

from infra import storage
from infra.cluster import ClusterConfig, PoolConfig
from models.errors import ConfigError
from models.chunk_plan import ChunkPlan
from stages.sources import ModelSources
from stages.workers import ExtendWorker, InitChunkWorker, RefineWorker, VideoJob


def start_ray(address: str = "", num_cpus: int | None = None, **kwargs) -> None:
    """Connect to ``address`` ('auto', 'ray://host:10001') or start a local cluster ('')."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def wait_until_placeable(cluster: ClusterConfig, stages: tuple[str, ...], timeout_s: float,
                         poll_s: float = 5.0) -> None:
    """Return once some alive node of the connected Ray cluster can run one actor of each pool of
    ``stages``; an autoscaling cluster may add such nodes meanwhile. After ``timeout_s`` (0: at
    once) raise a ConfigError naming the pools, their GPU types and the nodes' types, rather than
    wait forever for actors no node can hold."""
    deadline = time.monotonic() + timeout_s
    while missing := cluster.unplaceable(ray.nodes(), stages):
        if time.monotonic() >= deadline:
            raise ConfigError("pools", {stage: list(cluster.pool(stage).accelerator_types) for stage in missing},
                              f"pools a node of this Ray cluster can run (after {timeout_s:g} s: {missing})")
        time.sleep(min(poll_s, max(0.05, deadline - time.monotonic())))


def make_pool(worker: type, config: PoolConfig, sources: ModelSources) -> list:
    actor = ray.remote(worker).options(**config.actor_options())
    return [actor.remote(sources, config.torch_threads) for _ in range(config.size)]


@dataclass
class Pools:
    init: list
    extend: list
    refine: list
    config: ClusterConfig

    @classmethod
    def create(cls, sources: ModelSources, config: ClusterConfig, refine: bool = True) -> "Pools":
        return cls(make_pool(InitChunkWorker, config.init, sources), make_pool(ExtendWorker, config.extend, sources),
                   make_pool(RefineWorker, config.refine, sources) if refine else [], config)

    def shutdown(self) -> None:
        for actor in (*self.init, *self.extend, *self.refine):
            ray.kill(actor)


# -- pipeline-parallel refine ------------------------------------------------------------------
def assign_chunks(num_chunks: int, workers: int) -> list[int]:
    """Contiguous blocks of chunks per worker, so that only block edges cross workers."""
    per = -(-num_chunks // workers)
    return [i // per for i in range(num_chunks)]


def refine_pipeline_parallel(job: VideoJob, plan: ChunkPlan, workers: Sequence, steps: int,
                             return_frames: bool = False, engine=None) -> ray.ObjectRef:
    """Submit the whole refinement of one video over ``workers``; returns the ref of its result.

    Task (chunk i, step s) takes the refs of chunks i-1, i, i+1 after step s-1 and Ray starts it
    as soon as those exist (and its actor is free). It blends its own input exactly as the
    sequential order does (blending is a pure selection with a seeded f_thr), so the result is
    bit-identical to :func:`models.refinement.refine_sequential` on one process. Chunks are
    assigned in contiguous blocks; worker 0 also encodes and decodes the video. With ``engine``,
    chunk 0's task of every step asks it whether the video was cancelled.
    """
    m = len(plan)
    coordinator = workers[0]
    clean = coordinator.encode.options(num_returns=m).remote(job)
    current = [clean] if m == 1 else list(clean)
    owner = assign_chunks(m, len(workers))
    for s in range(steps):
        current = [workers[owner[i]].step.remote(job, i, s, current[i], current[i - 1] if i > 0 else None,
                                                 current[i + 1] if i < m - 1 else None, engine) for i in range(m)]
    return coordinator.finish.remote(job, *current, return_frames=return_frames)


def first_stage(job: VideoJob) -> str:
    """Where a (re-)run of this video starts, from what storage already holds: done only when the
    final video exists (a run that stopped after the low-res frames but before the final MP4
    publishes it again from the stored chunks)."""
    store = job.store
    if storage.exists(store.low_res_frames):
        if storage.exists(store.final_video):
            return "done"
        if job.request.refine:
            return "refine"
    return "extend" if store.load_chunk(0) is not None else "init"


def error_message(exc: BaseException) -> str:
    """One line for the manifest: the original exception of a failed Ray task, else the error."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"[:500]
