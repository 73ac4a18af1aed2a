"""The engine: one long-lived actor on the Ray cluster that owns the stage pools and schedules every
video, from batch runs and from the Serve app alike.

    engine = connect_engine(sources, cluster)           # started on first use, found by name after
    ray.get(engine.submit.remote(jobs, "batch"))        # or "interactive" (Serve requests)
    ray.get(engine.watch.remote(video_ids, versions, timeout_s=10))   # what changed since ``versions``

It is a detached, named actor (``ENGINE_NAME`` in ``ENGINE_NAMESPACE``) holding the init, extend and
refine pools (stages/pools.py) and the scheduling policy (stages/scheduling.py: priority for
interactive requests within a bounded share, back-pressure between stages). Every video's
refinement runs pipeline-parallel over the whole refine pool. Submitters never touch the pools:
they submit videos, watch their snapshots (status, stage, chunks, timings) and cancel them, and
each keeps its own records (the batch flow its manifest, the Serve app its jobs), so each record
has one writer.

One engine runs one set of models at a time. A submitter whose models or pools differ takes the
engine over when it is idle (no video queued or running); while it is busy, the submitter gets an
error naming what it runs.

A video is keyed by its ``video_id`` (a hash of every request parameter): submitting one that is
queued or running attaches to it (no second run); one that ended runs again, resuming from what
its store holds. Workers report each chunk as it is stored and ask, between denoising steps,
whether their video was cancelled.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from infra.cluster import ClusterConfig
from models.errors import ConfigError, require
from stages.pools import Pools, error_message, first_stage, make_pool, refine_pipeline_parallel
from stages.refine import refine_layout
from stages.scheduling import PRIORITIES, STAGE_ORDER, Scheduler
from stages.sources import ModelSources
from stages.workers import Cancelled, RefineWorker, VideoJob

ENGINE_NAME = "streamingt2v-engine"
ENGINE_NAMESPACE = "streamingt2v"
FINISHED = ("done", "failed", "cancelled")
MAX_WATCH_S = 30.0  # a watch call returns at least this often (keeps the actor's threads free)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine shares its pools: see stages/scheduling.py."""

    interactive_share: float = 0.75  # most of a stage's starts Serve requests take while batch videos wait
    refine_concurrency: int = 1  # videos refining at once, each over its own group of the refine pool's actors
    stage_retries: int = 1  # times a failed stage is tried again (resuming from its store) before its video fails
    keep_finished: int = 10_000  # finished videos whose snapshot the engine still answers for

    def __post_init__(self) -> None:
        Scheduler(interactive_share=self.interactive_share)  # validates the share
        require(self.refine_concurrency >= 1, "refine_concurrency", self.refine_concurrency, "an integer >= 1")
        require(self.stage_retries >= 0, "stage_retries", self.stage_retries, "an integer >= 0")
        require(self.keep_finished >= 1, "keep_finished", self.keep_finished, "an integer >= 1")


@dataclass
class _Video:
    job: VideoJob
    priority: str
    version: int = 0
    status: str = "queued"  # queued, running, done, failed, cancelled
    stage: str | None = None
    stages: dict[str, str] = field(default_factory=dict)
    chunks: set[int] = field(default_factory=set)
    chunks_total: int | None = None
    frames: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cancel: bool = False
    clients: set[str] = field(default_factory=set)  # submitters that want it; cancelled when none is left
    retried: dict[str, list[str]] = field(default_factory=dict)  # stage -> errors of its attempts tried again
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        done = 0
        while done in self.chunks:
            done += 1
        return {"video_id": self.job.request.video_id, "version": self.version, "status": self.status,
                "stage": self.stage, "stages": dict(self.stages), "chunks_done": done,
                "chunks_total": self.chunks_total, "frames": self.frames, "timings": dict(self.timings),
                "error": self.error, "retried": {k: list(v) for k, v in self.retried.items()},
                "priority": self.priority, "cancel_requested": self.cancel,
                "submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at}


@dataclass
class _Running:
    stage: str
    video_id: str
    actor: Any | None
    started: float = field(default_factory=time.perf_counter)


class Engine:
    """The engine actor (a threaded actor: its scheduling loop runs in a thread of its own while
    submitters and workers call in)."""

    def __init__(self, sources: ModelSources, cluster: ClusterConfig,
                 options: EngineOptions = EngineOptions()) -> None:
        require(options.refine_concurrency <= cluster.refine.size, "refine_concurrency", options.refine_concurrency,
                f"at most the refine pool's size {cluster.refine.size} (each video refines on a group of its actors)")
        self.sources, self.cluster, self.options = sources, cluster, options
        self.models = sources.fingerprint()
        self.refine_config = sources.refine_config()
        self.policy = Scheduler(cluster.max_videos_in_flight, options.interactive_share)
        self.videos: OrderedDict[str, _Video] = OrderedDict()
        self.running: dict[ray.ObjectRef, _Running] = {}
        self.cv = threading.Condition()
        self.me = ray.get_runtime_context().current_actor if ray.is_initialized() else None
        self.pools = Pools.create(sources, cluster, refine=False)  # refine: when a video first needs it
        self.free = {"init": deque(self.pools.init), "extend": deque(self.pools.extend), "refine": deque()}
        self.refine_schedule = None
        self.stopping = False
        self.loop = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)
        self.loop.start()

    # --- what submitters call ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Its models, pools and options, and how many videos it holds per stage and status."""
        with self.cv:
            load = {stage: {"queued": self.policy.waiting(stage), "running": len(self.policy.running[stage])}
                    for stage in STAGE_ORDER}
            statuses: dict[str, int] = {}
            for video in self.videos.values():
                statuses[video.status] = statuses.get(video.status, 0) + 1
            return {"models": self.models, "pools": self.cluster.to_dict(), "options": asdict(self.options),
                    "load": load, "videos": statuses, "refine_actors": len(self.pools.refine)}

    def busy(self) -> bool:
        with self.cv:
            return any(v.status not in FINISHED for v in self.videos.values())

    def submit(self, jobs: Sequence[VideoJob], priority: str = "batch", client: str = "") -> list[dict[str, Any]]:
        """Queue each video where its stored work lets it start; returns their snapshots. A video
        already queued or running is attached to, not run twice (``client`` joins the submitters
        that want it; a job asking for previews turns them on); one that ended runs again."""
        require(priority in PRIORITIES, "priority", priority, f"one of {list(PRIORITIES)}")
        placed = []
        for job in jobs:  # storage is read outside the lock
            vid = job.request.video_id
            with self.cv:
                known = self.videos.get(vid)
                if known is not None and known.status not in FINISHED:
                    if job.previews and not known.job.previews:
                        known.job = job
                    known.clients.add(client)
                    placed.append((job, None))
                    continue
            try:
                job.store.claim(self.models)  # work of other models is removed, never resumed
                placed.append((job, first_stage(job)))
            except OSError as error:  # a storage error fails this video only
                placed.append((job, error))
        snapshots = []
        with self.cv:
            for job, stage in placed:
                vid = job.request.video_id
                if stage is None:
                    snapshots.append(self.videos[vid].snapshot())
                    continue
                old = self.videos.pop(vid, None)
                video = _Video(job, priority, version=old.version + 1 if old else 0, clients={client})
                video.chunks_total = len(job.request.extend_plan())
                video.stages = {s: "pending" for s in STAGE_ORDER if s != "refine" or job.request.refine}
                self.videos[vid] = video
                if isinstance(stage, Exception):
                    self._end(video, "failed", error_message(stage))
                elif stage == "done":
                    video.chunks = set(range(video.chunks_total))
                    video.stages = dict.fromkeys(video.stages, "done")
                    self._end(video, "done")
                else:
                    for earlier in STAGE_ORDER[:STAGE_ORDER.index(stage)]:
                        video.stages[earlier] = "done"
                    if stage != "init":
                        video.chunks = set(range(video.chunks_total)) if stage == "refine" else {0}
                    self.policy.add(vid, stage, priority, job.request.refine)
                snapshots.append(video.snapshot())
            self._trim()
            self.cv.notify_all()
        return snapshots

    def watch(self, video_ids: Sequence[str], versions: dict[str, int], timeout_s: float = 10.0
              ) -> list[dict[str, Any]]:
        """The snapshots of ``video_ids`` whose version differs from ``versions`` (absent: any),
        waiting up to ``timeout_s`` for one to change. A video the engine does not know (never
        submitted, or forgotten) answers ``{"video_id": ..., "status": "unknown"}``."""
        deadline = time.monotonic() + min(max(timeout_s, 0.0), MAX_WATCH_S)
        with self.cv:
            while True:
                changed = []
                for vid in video_ids:
                    video = self.videos.get(vid)
                    if video is None:
                        if versions.get(vid) != -1:
                            changed.append({"video_id": vid, "status": "unknown", "version": -1})
                    elif versions.get(vid) != video.version:
                        changed.append(video.snapshot())
                remaining = deadline - time.monotonic()
                if changed or remaining <= 0:
                    return changed
                self.cv.wait(remaining)

    def cancel(self, video_ids: Sequence[str], client: str = "") -> None:
        """``client`` no longer wants these videos; one no submitter wants any more is cancelled:
        at once while queued, within a denoising step or two while running."""
        with self.cv:
            for vid in video_ids:
                video = self.videos.get(vid)
                if video is None or video.status in FINISHED:
                    continue
                video.clients.discard(client)
                if video.clients:
                    continue
                if self.policy.withdraw(vid):
                    self._end(video, "cancelled")
                elif not video.cancel:
                    video.cancel = True
                    self._bump(video)

    def actors(self, stage: str) -> list:
        """The actors of a stage's pool (for tests and operators: state, placement, fault drills)."""
        return list({"init": self.pools.init, "extend": self.pools.extend, "refine": self.pools.refine}[stage])

    def shutdown(self) -> None:
        """Stop the loop and the pools (the actor exits when killed)."""
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.pools.shutdown()

    # --- what workers call ------------------------------------------------------------------------

    def should_stop(self, video_id: str) -> bool:
        with self.cv:
            video = self.videos.get(video_id)
            return video is None or video.cancel

    def chunk_done(self, video_id: str, index: int) -> None:
        with self.cv:
            video = self.videos.get(video_id)
            if video is not None and index not in video.chunks and video.status == "running":
                video.chunks.add(index)
                self._bump(video)

    # --- the scheduling loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.cv:
                wants_refine = bool(self.policy.waiting("refine")) and not self.pools.refine
            if wants_refine:  # the actors load their model: outside the lock, so calls keep being answered
                self._start_refine_pool()
            with self.cv:
                if self.stopping:
                    return
                self._dispatch()
                refs = list(self.running)
                if not refs:
                    self.cv.wait(1.0)
                    continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.05)
            for ref in ready:
                self._complete(ref)

    def _dispatch(self) -> None:
        for stage in ("init", "extend"):
            while self.free[stage] and (vid := self.policy.start(stage)) is not None:
                actor = self.free[stage].popleft()
                video = self.videos[vid]
                self.running[actor.run.remote(video.job, self.me)] = _Running(stage, vid, actor)
                self._started(video, stage)
        while self.free["refine"] and (vid := self.policy.start("refine")) is not None:
            group = self.free["refine"].popleft()
            video = self.videos[vid]
            plan, steps = refine_layout(self.refine_config, self.refine_schedule, video.job.request)
            ref = refine_pipeline_parallel(video.job, plan, group, steps, engine=self.me)
            self.running[ref] = _Running("refine", vid, group)
            self._started(video, "refine")

    def _start_refine_pool(self) -> None:
        """The refine pool is made when the first video needs it (a batch without refinement
        never holds its GPUs), split into ``refine_concurrency`` groups of actors: each video
        refines pipeline-parallel over one group."""
        actors = make_pool(RefineWorker, self.cluster.refine, self.sources)
        schedule = ray.get(actors[0].schedule.remote())
        with self.cv:
            self.pools.refine, self.refine_schedule = actors, schedule
            self.free["refine"].extend(refine_groups(actors, self.options.refine_concurrency))

    def _started(self, video: _Video, stage: str) -> None:
        video.status, video.stage, video.stages[stage] = "running", stage, "running"
        video.started_at = video.started_at or time.time()
        self._bump(video)

    def _complete(self, ref: ray.ObjectRef) -> None:
        task = self.running.pop(ref)
        try:
            out, error = ray.get(ref), None
        except Exception as exc:  # the stage failed (or was cancelled): this video only
            out, error = None, exc
        with self.cv:
            if task.actor is not None:
                self.free[task.stage].append(task.actor)
            video = self.videos.get(task.video_id)
            if video is None:  # forgotten meanwhile (cannot happen while running; kept safe)
                self.policy.finish(task.video_id, task.stage, ok=False)
                return
            video.timings[f"{task.stage}_s"] = time.perf_counter() - task.started
            cancelled = video.cancel or _is_cancel(error)
            retried = video.retried.setdefault(task.stage, [])
            if error is not None and not cancelled and len(retried) < self.options.stage_retries:
                retried.append(error_message(error))  # tried again, from what its store holds
                self.policy.retry(task.video_id, task.stage)
                video.stages[task.stage], video.stage = "pending", None
                self._bump(video)
                return
            if not retried:
                del video.retried[task.stage]
            if error is not None or video.cancel:
                self.policy.finish(task.video_id, task.stage, ok=False)
                video.stages[task.stage] = "cancelled" if cancelled else "failed"
                self._end(video, "cancelled" if cancelled else "failed", None if cancelled else error_message(error))
                self.cv.notify_all()
                return
            video.stages[task.stage] = "done"
            if task.stage == "extend":
                video.chunks = set(range(out.get("chunks_total", video.chunks_total)))
                video.chunks_total = out.get("chunks_total", video.chunks_total)
            if "frames" in out:
                video.frames = out["frames"]
            if self.policy.finish(task.video_id, task.stage) is None:
                self._end(video, "done")
            else:
                video.stage = None
                self._bump(video)
            self.cv.notify_all()

    def _end(self, video: _Video, status: str, error: str | None = None) -> None:
        video.status, video.error, video.stage = status, error, None
        for stage, state in video.stages.items():
            if state in ("pending", "running"):
                video.stages[stage] = {"done": "done", "failed": "failed"}.get(status, "cancelled")
        video.finished_at = time.time()
        if video.started_at is not None:
            video.timings["total_s"] = video.finished_at - video.started_at
        self._bump(video)

    def _bump(self, video: _Video) -> None:
        video.version += 1
        self.cv.notify_all()

    def _trim(self) -> None:
        """Forget the oldest finished videos beyond ``keep_finished``."""
        finished = [vid for vid, v in self.videos.items() if v.status in FINISHED]
        for vid in finished[:max(0, len(finished) - self.options.keep_finished)]:
            del self.videos[vid]


def refine_groups(actors: list, groups: int) -> list[list]:
    """The refine pool split into ``groups`` groups of contiguous actors, sizes differing by one."""
    size, extra = divmod(len(actors), groups)
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + size + (g < extra))
    return [actors[a:b] for a, b in zip(bounds, bounds[1:])]


def _is_cancel(error: BaseException | None) -> bool:
    return isinstance(error, Cancelled) or isinstance(getattr(error, "cause", None), Cancelled)


# --- finding or starting the engine ----------------------------------------------------------------

def engine_actor_options() -> dict[str, Any]:
    return {"name": ENGINE_NAME, "namespace": ENGINE_NAMESPACE, "lifetime": "detached", "num_cpus": 0,
            "max_concurrency": 256, "max_restarts": -1, "get_if_exists": True}


def connect_engine(sources: ModelSources, cluster: ClusterConfig, options: EngineOptions = EngineOptions(),
                   wait_s: float = 60.0):
    """The engine of the connected Ray cluster for these models and pools: found by name, started
    if there is none, taken over if it runs other models or pools and is idle. Raises a
    ConfigError naming what it runs if it is busy with other models or pools."""
    want = {"models": sources.fingerprint(), "pools": cluster.to_dict(), "options": asdict(options)}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            engine = ray.remote(Engine).options(**engine_actor_options()).remote(sources, cluster, options)
            have = ray.get(engine.describe.remote())
        except ValueError:  # the name of an engine being killed is not free yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if all(have[k] == v for k, v in want.items()):
            return engine
        if ray.get(engine.busy.remote()):
            field_ = "models" if have["models"] != want["models"] else "pools"
            raise ConfigError(field_, want[field_], f"what the engine of this Ray cluster runs while it is busy "
                              f"({have[field_]}); wait until its videos end, or use another cluster")
        stop_engine(engine)
        if time.monotonic() > deadline:
            raise TimeoutError("the engine of other models did not stop")


def find_engine():
    """The running engine, or None."""
    try:
        return ray.get_actor(ENGINE_NAME, namespace=ENGINE_NAMESPACE)
    except ValueError:
        return None


def stop_engine(engine=None) -> None:
    """Stop the engine (its pools first) and wait until its name is free."""
    engine = engine or find_engine()
    if engine is None:
        return
    try:
        ray.get(engine.shutdown.remote(), timeout=60)
    except Exception:  # already dead or wedged: killing it is what is left
        pass
    ray.kill(engine, no_restart=True)
    for _ in range(300):
        if find_engine() is None:
            return
        time.sleep(0.1)


def follow_videos(engine, video_ids: Sequence[str], timeout_s: float = 3600.0,
                  on_change=None) -> dict[str, dict[str, Any]]:
    """Watch ``video_ids`` until each has ended; returns their last snapshots. ``on_change`` sees
    every new snapshot as it arrives (e.g. to time stages)."""
    versions: dict[str, int] = {}
    last: dict[str, dict[str, Any]] = {}
    open_ = set(video_ids)
    deadline = time.monotonic() + timeout_s
    while open_:
        if time.monotonic() > deadline:
            raise TimeoutError(f"videos still running after {timeout_s:g} s: {sorted(open_)}")
        for snap in ray.get(engine.watch.remote(sorted(open_), versions, 10.0)):
            vid = snap["video_id"]
            versions[vid], last[vid] = snap["version"], snap
            if on_change is not None:
                on_change(snap)
            if snap["status"] in (*FINISHED, "unknown"):
                open_.discard(vid)
    return last
