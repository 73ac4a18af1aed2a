"""Prefect flow ``generate-batch``: prompts -> videos on Ray, tracked in a Parquet manifest.

Run it with ``prefect deployment run generate-batch/<deployment> -p prompts='[...]'`` against a
served deployment (flows/serve.py), or call :func:`generate_batch` directly. The flow is thin:
it validates every parameter before any work, merges the batch into its manifest (finished
videos are skipped, unfinished ones resume from their last finished chunk), starts or joins
Ray, streams the videos through the stage pools and commits the manifest after every stage
event. The run holds the lease of its ``output_uri`` (infra/output_lease.py) throughout: a second
run on the same location stops with an error naming the holder, and a crashed run's lease is
taken over once it expires. Prefect artifacts: a progress bar updated as videos finish, and a table (one row per
video) at the end.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from infra import storage
from infra.manifest import BatchManifest
from infra.output_lease import OutputLease
from infra.params import takes_parameters
from infra.prompts import load_prompts
from models.errors import ConfigError
from models.request import NOT_PARAMETERS, GenerationRequest

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

BATCH_EXCLUDED = ("prompt", *NOT_PARAMETERS)  # prompts come from the batch's rows
STAGE_FIELDS = ("status", "init_status", "extend_status", "refine_status", "init_s", "extend_s", "refine_s",
                "chunks_total", "error")


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


def _video_exists(row: dict) -> bool:
    return bool(row.get("video_uri")) and storage.exists(row["video_uri"])


def build_requests(rows: list[dict], defaults: dict) -> list[GenerationRequest]:
    """One validated request per prompt row; row values override the batch defaults."""
    requests = []
    for i, row in enumerate(rows):
        try:
            requests.append(GenerationRequest(**{**defaults, **row}))
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
                           refiner=refiner, device=device, dtype=dtype)
    cluster = ClusterConfig.load(pools)
    requests = build_requests(read_prompts(prompts), defaults)
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
    create_table_artifact(table=table, key="generate-batch-videos", description=f"batch {batch_id}: {manifest_uri}")
    counts: dict[str, int] = {}
    for row in table:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"manifest": manifest_uri, "batch_id": batch_id, "counts": counts, "ran": len(results)}


def run_on_ray(requests: list[GenerationRequest], manifest: BatchManifest, manifest_uri: str, output_uri: str,
               sources, cluster, ray_address: str, total: int, lease: OutputLease | None = None) -> dict:
    """Stream the videos through the stage pools, committing the manifest on every event (while
    ``lease`` is this run's: a run whose lease was taken over stops before it writes)."""
    import time

    import ray

    from infra.run_store import RunStore
    from stages.pools import BatchScheduler, Pools, start_ray, wait_until_placeable
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
    done = total - len(requests)
    progress = create_progress_artifact(progress=100.0 * done / total, key="generate-batch-progress",
                                        description=f"{done}/{total} videos done")
    starts: dict[str, float] = {}

    def on_update(video_id: str, fields: dict) -> None:
        nonlocal done
        if lease is not None:
            lease.check()
        row = {k: v for k, v in fields.items() if k in STAGE_FIELDS}
        if fields.get("status") == "running" and video_id not in starts:
            starts[video_id] = time.perf_counter()
            row["attempts"] = manifest.row(video_id)["attempts"] + 1
            store = RunStore(output_uri, video_id)
            row.update(chunk_latents_uri=storage.join(store.work, "extend"), low_res_uri=store.low_res_video,
                       video_uri=store.final_video)
        if fields.get("extend_status") == "done" and "chunks_total" in fields:
            row["chunks_done"] = fields["chunks_total"]
        if fields.get("status") == "done":
            row["total_s"] = time.perf_counter() - starts.get(video_id, time.perf_counter())
            row["error"] = None
            row["models"] = scheduler.models
        manifest.update(video_id, **row)
        save_manifest(manifest, manifest_uri)
        if fields.get("status") in ("done", "failed"):
            done += 1
            update_progress_artifact(progress, 100.0 * done / total, description=f"{done}/{total} videos finished")

    pools = Pools.create(sources, cluster, refine=wants_refine)
    try:
        jobs = [VideoJob(r.params(), output_uri) for r in requests]
        scheduler = BatchScheduler(pools, sources, on_update=on_update)
        results = scheduler.run(jobs)
    finally:
        pools.shutdown()
        if started_here:
            ray.shutdown()
    if lease is not None:
        lease.check()
    commit_manifest(manifest, manifest_uri)  # the final state, with the task's retries
    return results


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
