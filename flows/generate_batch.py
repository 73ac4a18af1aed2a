"""Prefect flow ``generate-batch``: prompts -> videos on Ray, tracked in a Parquet manifest.

Run it with ``prefect deployment run generate-batch/<deployment> -p prompts='[...]'`` against a
served deployment (flows/serve.py), or call :func:`generate_batch` directly. The flow is thin:
it validates every parameter before any work, merges the batch into its manifest (finished
videos are skipped, unfinished ones resume from their last finished chunk), starts or joins
Ray, streams the videos through the stage pools and commits the manifest after every stage
event. The run holds the lease of its ``output_uri`` (infra/output_lease.py) throughout: a second
run on the same location stops with an error naming the holder, and a crashed run's lease is
taken over once it expires. The videos are made by the cluster's engine (stages/engine.py), which
this flow shares with the Serve app. Prefect artifacts: a progress bar that moves as chunks
finish, and a table (one row per video) at the end.
"""

from __future__ import annotations

import hashlib
import queue
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Cancelled, State

from infra import storage
from infra.manifest import BatchManifest
from infra.output_lease import OutputLease
from infra.params import takes_parameters
from infra.prompts import load_prompts
from infra.run_store import RunStore
from models.errors import ConfigError
from models.request import NOT_PARAMETERS, PROMPT_FIELDS, GenerationRequest
from stages.engine import EngineOptions

MANIFEST_NAME = "manifest.parquet"
LEASE_TTL_ENV = "STREAMINGT2V_LEASE_TTL_S"
PLACEMENT_TIMEOUT_ENV = "STREAMINGT2V_PLACEMENT_TIMEOUT_S"


def placement_timeout_s() -> float:
    """How long a batch on a joined cluster waits for nodes that can run every pool (an autoscaler
    adding them) before it fails naming the pools (default 600 s)."""
    import os

    return float(os.environ.get(PLACEMENT_TIMEOUT_ENV, 600))


def lease_ttl_s() -> float:
    """The output lease's time to live: how long after a crash the next run may take over
    (default 120 s; renewed every third of it while the run lives)."""
    import os

    return float(os.environ.get(LEASE_TTL_ENV, 120))

BATCH_EXCLUDED = (*PROMPT_FIELDS, *NOT_PARAMETERS)  # prompts come from the batch's rows


@task(retries=3, retry_delay_seconds=2)
def read_prompts(prompts: list[str] | list[dict] | str) -> list[dict]:
    """The prompt rows (retried: the source may be on flaky object storage)."""
    return load_prompts(prompts)


@task(retries=3, retry_delay_seconds=2)
def commit_manifest(manifest: BatchManifest, uri: str) -> None:
    """Atomic whole-file write; idempotent, so a retry never duplicates anything."""
    manifest.write(uri)


@task(retries=3, retry_delay_seconds=2)
def open_manifest(uri: str, batch_id: str, requests: list[GenerationRequest], models: str) -> BatchManifest:
    """The batch's manifest with ``requests`` merged in. Done rows stay done only with their
    video and when ``models`` (the fingerprint of the models of this run) made them; the others
    run again."""
    manifest = BatchManifest.read(uri) if storage.exists(uri) else BatchManifest(batch_id)
    merge = manifest.merge_requests(requests)
    lost = [vid for vid in merge.finished if not _video_exists(manifest.row(vid))]
    for vid in lost:  # done only with its video: rebuild what is missing from the stored chunks
        manifest.update(vid, status="pending", error=None)
    other = manifest.requeue_other_models(models)  # their stored work is discarded when they run
    get_run_logger().info("manifest %s: %d new, %d finished (skipped), %d to resume, %d dropped, %d done without "
                          "their video (rebuilt), %d done by other models (run again)", uri, len(merge.added),
                          len(merge.finished) - len(lost) - len(other), len(merge.resumed), len(merge.dropped),
                          len(lost), len(other))
    manifest.write(uri)
    return manifest


STAGE_TASKS = {"init": "init-chunk", "extend": "extend", "refine": "refine"}
"""The name of each stage's task runs: ``<name>/<video_id>``."""
_STAGE_WATCHES: dict[str, "queue.Queue[tuple[str, Any]]"] = {}  # task key -> the stage's outcomes, in order


class StageFailed(RuntimeError):
    """A stage's run on the engine failed (the message is the worker's error)."""


@task(cache_policy=NO_CACHE, persist_result=False, retries=EngineOptions().stage_retries, retry_delay_seconds=0)
def stage_run(key: str, video_id: str, stage: str) -> dict | State:
    """One stage of one video as the engine runs it: this task run starts when the stage starts on
    its pool and ends with it (Completed, Failed with the worker's error, Cancelled), and retries
    when the engine tries the stage again."""
    outcome, detail = _STAGE_WATCHES[key].get()
    if outcome == "done":
        return detail
    if outcome == "cancelled":
        return Cancelled(message=f"{stage} of {video_id} cancelled")
    raise StageFailed(detail or f"{stage} of {video_id} failed")


def _video_exists(row: dict) -> bool:
    return bool(row.get("video_uri")) and storage.exists(row["video_uri"])


def build_requests(rows: list[dict], defaults: dict, output_uri: str | None = None) -> list[GenerationRequest]:
    """One validated request per prompt row; row values override the batch defaults. With
    ``output_uri``, a row's init video or image is staged there (infra.init_media)."""
    from infra.init_media import stage_request

    requests = []
    for i, row in enumerate(rows):
        try:
            request = GenerationRequest(**{**defaults, **row})
            requests.append(stage_request(request, output_uri) if output_uri is not None else request)
        except ConfigError as exc:
            raise ConfigError(f"prompts[{i}].{exc.field}", exc.value, exc.allowed) from None
    return requests


@flow(name="generate-batch", log_prints=True)
@takes_parameters(GenerationRequest, into="defaults", exclude=BATCH_EXCLUDED)
def generate_batch(
    prompts: list[str] | list[dict] | str,
    output_uri: str = "outputs/batch",
    batch_id: str | None = None,
    ray_address: str = "",
    pools: str = "local",
    base_model: str | None = None,
    streaming_model: str | None = None,
    refiner: str | None = None,
    device: str = "cpu",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    low_memory: bool = False,
    defaults: dict | None = None,
) -> dict:
    """Generate every prompt of a batch; returns counts by status and the manifest URI.

    ``prompts``: a list of prompts (or of dicts with prompt / negative_prompt / seed /
    num_frames / any other request parameter), or the URI of a CSV, Parquet or JSONL file.
    ``ray_address``: '' starts a local Ray cluster, 'auto' joins the one on this machine,
    'ray://host:10001' a remote one. ``pools``: 'local', 'gpu' (matches ray_cluster.yaml) or a
    YAML file of pool resources. Every parameter of ``GenerationRequest`` (num_frames, seed,
    guidance_text, ...) is also a parameter of this flow: the batch's default, which a prompt
    row may override.
    """
    from infra.cluster import ClusterConfig
    from stages.sources import ModelSources

    # Everything is validated before any work starts.
    sources = ModelSources(preset=defaults["preset"], base_model=base_model, streaming_model=streaming_model,
                           refiner=refiner, device=device, dtype=dtype, low_memory=low_memory)
    cluster = ClusterConfig.load(pools)
    requests = build_requests(read_prompts(prompts), defaults, output_uri)
    if not requests:
        raise ConfigError("prompts", prompts, "at least one prompt")
    manifest_uri = storage.join(output_uri, MANIFEST_NAME)
    batch_id = batch_id or hashlib.sha256(output_uri.encode()).hexdigest()[:12]
    with OutputLease(output_uri, ttl_s=lease_ttl_s()) as lease:  # one run writes an output_uri at a time
        manifest = open_manifest(manifest_uri, batch_id, requests, sources.fingerprint())
        todo = [manifest.request(row["video_id"]) for row in manifest.pending()]
        results = run_on_ray(todo, manifest, manifest_uri, output_uri, sources, cluster, ray_address,
                             total=len(requests), lease=lease)
    table = [{k: row[k] for k in ("video_id", "prompt", "seed", "num_frames", "status", "error", "total_s",
                                  "video_uri")} for row in manifest.rows.values() if row["status"] != "skipped"]
    create_table_artifact(table=table, key="generate-batch-videos", description=f"batch {batch_id}: {manifest_uri}; "
                          f"its page: /batches/{batch_id} on a Serve app whose `batches` include {output_uri}")
    counts: dict[str, int] = {}
    for row in table:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"manifest": manifest_uri, "batch_id": batch_id, "counts": counts, "ran": len(results)}


def run_on_ray(requests: list[GenerationRequest], manifest: BatchManifest, manifest_uri: str, output_uri: str,
               sources, cluster, ray_address: str, total: int, lease: OutputLease | None = None) -> dict:
    """Submit the videos to the cluster's engine (stages/engine.py) and follow them, committing the
    manifest as their stages and chunks finish (while ``lease`` is this run's: a run whose lease
    was taken over stops before it writes, and withdraws its videos from the engine)."""
    import ray

    from stages.engine import connect_engine
    from stages.pools import start_ray, wait_until_placeable
    from stages.workers import VideoJob

    if not requests:
        return {}
    started_here = not ray.is_initialized() and not ray_address
    start_ray(ray_address)
    wants_refine = any(r.refine for r in requests)
    stages = ("init", "extend", "refine") if wants_refine else ("init", "extend")
    if not ray_address and (unmet := cluster.unmet(ray.cluster_resources(), stages)):
        raise ConfigError("pools", cluster.to_dict(), f"within this local Ray cluster's resources (short of {unmet})")
    # A local cluster never grows: refuse at once; a joined one may autoscale the nodes in.
    wait_until_placeable(cluster, stages, placement_timeout_s() if ray_address else 0.0)
    follower = BatchFollower(manifest, manifest_uri, output_uri, total - len(requests), total, sources.fingerprint(),
                             lease)
    try:
        engine = connect_engine(sources, cluster)
        jobs = [VideoJob(r.params(), output_uri) for r in requests]
        follower.follow(engine, jobs)
    finally:
        if started_here:
            ray.shutdown()
    if lease is not None:
        lease.check()
    commit_manifest(manifest, manifest_uri)  # the final state, with the task's retries
    return follower.results


class BatchFollower:
    """The flow's side of the engine: submits the batch's videos, turns the engine's snapshots
    into manifest rows (committed once per batch of changes) and moves the progress artifact per
    finished chunk. The manifest's one writer."""

    PROGRESS_EVERY_S = 1.0

    def __init__(self, manifest: BatchManifest, manifest_uri: str, output_uri: str, done: int, total: int,
                 models: str, lease: OutputLease | None) -> None:
        self.manifest, self.uri, self.output_uri, self.models, self.lease = (manifest, manifest_uri, output_uri,
                                                                             models, lease)
        self.done, self.total = done, total
        self.client = f"batch:{output_uri}"
        self.results: dict[str, dict] = {}
        self.seen: dict[str, dict] = {}  # video -> its last snapshot
        self.chunks: dict[str, float] = {}  # unfinished video -> fraction of its chunks done
        self.progress = create_progress_artifact(progress=100.0 * done / total, key="generate-batch-progress",
                                                 description=f"{done}/{total} videos done")
        self.progress_at = 0.0
        self.mirror = FlowRunContext.get() is not None  # stage task runs, inside a flow run
        self.stage_futures: dict[str, Any] = {}  # task key -> the stage's task run

    def follow(self, engine, jobs: list) -> None:
        import ray

        by_id = {job.request.video_id: job for job in jobs}
        versions: dict[str, int] = {}
        open_ = set(by_id)
        try:
            self.apply(ray.get(engine.submit.remote(jobs, "batch", self.client)), versions, open_)
            while open_:
                changed = ray.get(engine.watch.remote(sorted(open_), versions, 10.0))
                lost = [by_id[s["video_id"]] for s in changed if s["status"] == "unknown"]
                if lost:  # the engine was restarted: its videos resume from their stores
                    changed = [s for s in changed if s["status"] != "unknown"]
                    changed += ray.get(engine.submit.remote(lost, "batch", self.client))
                self.apply(changed, versions, open_)
        finally:
            if open_:  # this run stops (an error, its lease taken over): it leaves no work behind
                engine.cancel.remote(sorted(open_), self.client)
            for key in self.stage_futures:  # every stage task run ends
                _STAGE_WATCHES[key].put(("cancelled", None))
            for key, future in self.stage_futures.items():
                future.wait()
                _STAGE_WATCHES.pop(key, None)

    def apply(self, snapshots: list[dict], versions: dict[str, int], open_: set[str]) -> None:
        if self.lease is not None:
            self.lease.check()
        for snap in snapshots:
            vid = snap["video_id"]
            versions[vid] = snap["version"]
            self.manifest.update(vid, **self.fields(snap))
            if self.mirror:
                self.mirror_stages(snap)
            if snap["status"] in ("done", "failed", "cancelled"):
                open_.discard(vid)
                self.chunks.pop(vid, None)
                self.done += 1
                self.results[vid] = {"status": snap["status"], "error": snap["error"], **snap["timings"]}
            elif snap["chunks_total"]:
                self.chunks[vid] = snap["chunks_done"] / snap["chunks_total"]
            self.seen[vid] = snap
        if snapshots:
            save_manifest(self.manifest, self.uri)
            self.report_progress(force=not open_)

    def mirror_stages(self, snap: dict) -> None:
        """Start the task run of each stage that has started, and pass each stage's outcomes on:
        a retry, then done, failed or cancelled."""
        vid, before = snap["video_id"], self.seen.get(snap["video_id"])
        for stage, state in snap["stages"].items():
            errors = snap["retried"].get(stage, [])
            ran = state == "running" or f"{stage}_s" in snap["timings"] or errors
            key = f"{self.client}/{stage}/{vid}"
            if key not in self.stage_futures:
                if not ran:
                    continue
                _STAGE_WATCHES[key] = queue.Queue()
                self.stage_futures[key] = stage_run.with_options(
                    task_run_name=f"{STAGE_TASKS[stage]}/{vid}").submit(key, vid, stage)
                told = 0
            else:
                told = len(before["retried"].get(stage, [])) if before else 0
            for error in errors[told:]:
                _STAGE_WATCHES[key].put(("retry", error))
            was = before["stages"].get(stage) if before else None
            if state in ("done", "failed", "cancelled") and (was != state or told < len(errors)):
                detail = ({k: v for k, v in snap["timings"].items() if k == f"{stage}_s"} if state == "done"
                          else snap["error"])
                _STAGE_WATCHES[key].put((state, detail))

    def fields(self, snap: dict) -> dict:
        """The manifest columns of a snapshot."""
        vid, before = snap["video_id"], self.seen.get(snap["video_id"])
        status = {"queued": "pending", "cancelled": "skipped"}.get(snap["status"], snap["status"])
        row = {"status": status, "chunks_done": snap["chunks_done"], "chunks_total": snap["chunks_total"],
               **{f"{stage}_status": {"cancelled": "skipped"}.get(state, state)
                  for stage, state in snap["stages"].items()},
               **{k: v for k, v in snap["timings"].items() if k in ("init_s", "extend_s", "refine_s", "total_s")}}
        if snap["started_at"] and (before is None or not before.get("started_at")):  # it ran in this run
            row["attempts"] = self.manifest.row(vid)["attempts"] + 1
            row.update(RunStore(self.output_uri, vid).manifest_artifacts())
        if snap["status"] == "done":
            row.update(error=None, models=self.models)
        elif snap["error"]:
            row["error"] = snap["error"]
        return row

    def report_progress(self, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self.progress_at < self.PROGRESS_EVERY_S:
            return
        self.progress_at = now
        moving = sum(self.chunks.values())
        update_progress_artifact(self.progress, 100.0 * (self.done + moving) / self.total,
                                 description=f"{self.done}/{self.total} videos finished, "
                                             f"{moving:.1f} more in chunks")


def _logger():
    """The flow run's logger, or this module's outside a flow run."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def save_manifest(manifest: BatchManifest, uri: str, tries: int = 3, delay_s: float = 0.5) -> bool:
    """Commit the manifest after a scheduler event, retrying with backoff. A write that still
    fails does not stop the batch: the rows stay in memory and the next event's whole-file write
    (at the latest the final commit) saves them. Returns whether this write landed."""
    import time

    from stages.pools import error_message

    for attempt in range(tries):
        try:
            manifest.write(uri)
            return True
        except Exception as error:  # storage errors differ by filesystem; all are retried
            if attempt + 1 == tries:
                _logger().warning("manifest %s not saved (%s); the next event writes it again", uri,
                                  error_message(error))
                return False
            time.sleep(delay_s * 2 ** attempt)
    return False
