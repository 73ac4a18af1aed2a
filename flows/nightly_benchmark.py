"""Prefect flow ``nightly-benchmark``: generate a prompt set, score it with the paper's metrics, track it.

Each run generates its videos through the generate-batch path (:func:`flows.generate_batch.build_requests`,
``open_manifest``, ``run_on_ray``) into ``<output_uri>/<run_id>/`` with its own batch manifest,
computes every metric of Sec. 5.2 / App. D for each finished video
(:func:`evaluation.metrics.evaluate_video`), writes them into the manifest's metric columns,
appends one row per video and one summary row to the history (:mod:`evaluation.history`), and
publishes a markdown artifact comparing tonight's means with the previous run of the same
settings and, where the settings match, with the paper's figures. Two PNG plots (metric trends,
X-T slices of the worst videos) are written next to the history: Prefect's image artifact takes
only a URL, which a local path or an s3:// object is not, so the markdown gives their URIs.

Ablations (App. D.3, Sec. 5.2): ``blend`` (randomized / shared-noise / independent refinement
chunks), ``apm`` (the "w/o APM" model) and ``cam_variant``: the conditioning of the streaming
stage, ``cam`` or the ``conc-cond`` baseline (App. D.1), whose weights ``streaming_model`` must
name (a directory trained by ``streamingt2v train --stage conc_cond``). ``condition_replacement``
(beyond the paper) runs the extension chunks with the replacement method
(``models.streaming_t2v.ConditionReplacement``).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import Field

from evaluation import history, plots
from evaluation.cli import FLOW_METHODS, FLOW_SIZES
from evaluation.metrics import METRIC_NAMES, FlowConfig, ModelPaths, evaluate_video
from evaluation.preview import video_preview_png
from evaluation.prompt_sets import PROMPT_SETS
from flows.generate_batch import (BATCH_EXCLUDED, MANIFEST_NAME, build_requests, commit_manifest, lease_ttl_s,
                                  open_manifest, read_prompts, run_on_ray)
from infra import storage
from infra.manifest import TIMING_COLUMNS, BatchManifest
from infra.output_lease import OutputLease
from infra.params import takes_parameters
from infra.prompts import load_prompts
from infra.video_io import read_video
from models.errors import ConfigError, require
from models.request import GenerationRequest, with_preset_defaults

CAM_VARIANTS = ("cam", "conc-cond")
NIGHTLY_DEFAULTS = {"num_frames": 240}  # the paper's test videos (Sec. 5.2); the rest: the request defaults
WORST_VIDEOS = 4
MARKDOWN_KEY = "nightly-benchmark-summary"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a run's directory under output_uri

# evaluate_video's metric names -> the batch manifest's metric columns (mawe_reference has none).
MANIFEST_COLUMNS = {"scuts": "scuts", "ofs": "ofs", "warp_error": "warp_error", "mawe": "mawe",
                    "flow_magnitude_std": "flow_std", "clip_score": "clip_score",
                    "aesthetic_score": "aesthetic_score", "reid_score": "reid"}

# (metric, settings under which the paper measured it, value, source). The paper's numbers are
# for its real models (ModelScope Video-LDM + StreamingT2V, flow at 720x720); timings are those
# of the authors' implementation on one A100-80GB.
PAPER_FIGURES: tuple[tuple[str, dict[str, Any], float, str], ...] = (
    ("scuts", {"apm": False}, 0.03, "CAM w/o APM, Sec. 5.2"),
    ("flow_magnitude_std", {"refine": True, "blend": "independent"}, 8.72, "independent chunks, App. D.3"),
    ("flow_magnitude_std", {"refine": True, "blend": "shared-noise"}, 6.01, "shared noise, App. D.3"),
    ("flow_magnitude_std", {"refine": True, "blend": "randomized"}, 3.32, "randomized blending, App. D.3"),
    ("reid_score", {"apm": False}, 93.42, "w/o APM, Sec. 5.2"),
    ("reid_score", {"apm": True}, 94.95, "with APM, Sec. 5.2"),
    ("total_s", {"num_frames": 240, "refine": False}, 340.0, "authors' code, A100, 256x256"),
    ("total_s", {"num_frames": 240, "refine": True}, 1610.0, "authors' code, A100, 720x720"),
    ("total_s", {"num_frames": 1200, "refine": False}, 1710.0, "authors' code, A100, 256x256"),
    ("total_s", {"num_frames": 1200, "refine": True}, 10225.0, "authors' code, A100, 720x720"),
)


def paper_figure(metric: str, settings: dict[str, Any]) -> tuple[float, str] | None:
    """The paper's figure for ``metric`` measured under settings that match ``settings``, if any."""
    for name, conditions, value, source in PAPER_FIGURES:
        if name == metric and all(settings[k] == v for k, v in conditions.items()):
            return value, source
    return None


def prompt_rows(prompt_set: str | list[str]) -> tuple[str, list[dict]]:
    """(label stored in the history, prompt rows) of a named set, a list of prompts or a file URI."""
    try:
        if isinstance(prompt_set, list):
            label = "list:" + hashlib.sha256("\n".join(prompt_set).encode()).hexdigest()[:12]
            return label, load_prompts(prompt_set)
        if prompt_set in PROMPT_SETS:
            return prompt_set, load_prompts(list(PROMPT_SETS[prompt_set]))
        return prompt_set, read_prompts(prompt_set)
    except ConfigError as exc:
        raise _prompt_set_error(exc) from None


def _prompt_set_error(exc: ConfigError) -> ConfigError:
    """The error of the prompt source or of one prompt's request, named after this flow's parameter."""
    hint = f", or one of the named sets {sorted(PROMPT_SETS)}" if exc.field == "prompts" else ""
    return ConfigError(exc.field.replace("prompts", "prompt_set", 1), exc.value, exc.allowed + hint)


@task(retries=1, retry_delay_seconds=2)
def evaluate(video_uri: str, prompt: str, models: ModelPaths, flow_config: FlowConfig,
             prompt_changes: tuple[int, ...] = ()) -> dict:
    """All metrics of one finished video (Sec. 5.2, App. D.3), and how a prompt schedule's
    transitions look (prompt_change_ratio); missing ones with their reason."""
    return evaluate_video(video_uri, prompt, models, flow_config, prompt_changes)


def video_row(run: dict[str, Any], manifest_row: dict[str, Any], metrics: dict[str, float | None]) -> dict[str, Any]:
    """One history row: the run's settings, the video's identity, status, metrics and timings."""
    return {**run, "num_frames": manifest_row["num_frames"], "video_id": manifest_row["video_id"],
            "prompt": manifest_row["prompt"], "status": manifest_row["status"], **metrics,
            **{name: manifest_row[name] for name in TIMING_COLUMNS}}


def score_videos(manifest: BatchManifest, manifest_uri: str, video_ids: list[str], run: dict[str, Any],
                 models: ModelPaths, flow_config: FlowConfig) -> tuple[list[dict], dict[str, str]]:
    """Evaluate every finished video, one after the other, committing its metrics to the batch
    manifest's metric columns; returns the history rows (failed videos without metrics) and the
    reasons of the metrics that are missing."""
    video_rows, missing = [], {}
    for video_id in video_ids:
        row = manifest.row(video_id)
        metrics = dict.fromkeys(METRIC_NAMES)
        if row["status"] == "done":
            changes = tuple(frame for frame, _ in manifest.request(video_id).schedule.entries[1:])
            result = evaluate(row["video_uri"], row["prompt"], models, flow_config, changes)
            metrics, missing = result["metrics"], {**missing, **result["missing"]}
            row = manifest.update(video_id, **{column: metrics[name] for name, column in MANIFEST_COLUMNS.items()})
            commit_manifest(manifest, manifest_uri)
        video_rows.append(video_row(run, row, metrics))
    return video_rows, missing


# Idempotent (a run id already in the history is replaced), so retrying is safe.
append_history = task(history.append_run, name="append-history", retries=3, retry_delay_seconds=2)


@task(retries=3, retry_delay_seconds=2)
def publish_plots(plots_uri: str, trend_rows: list[dict], worst: list[dict], best: dict | None = None
                  ) -> dict[str, str]:
    """Write the metric-trend plot, the X-T slice panel of the worst videos and frame strips (low
    res above refined) of the worst and the best video; returns their URIs."""
    labels = [f"{row['prompt'][:40]}\nMAWE {_number(row['mawe'])}, SCuts {_number(row['scuts'])}" for row in worst]
    uris = {"metric_trends": storage.join(plots_uri, "metric_trends.png"),
            "worst_xt_slices": storage.join(plots_uri, "worst_xt_slices.png")}
    storage.write_bytes(uris["metric_trends"], plots.metric_trends_png(trend_rows))
    videos = [(label, read_video(row["video_uri"])) for label, row in zip(labels, worst)]
    storage.write_bytes(uris["worst_xt_slices"], plots.xt_slices_png(videos))
    for name, row in (("worst_strip", worst[0] if worst else None), ("best_strip", best)):
        if row is not None:
            uris[name] = storage.join(plots_uri, f"{name}.png")
            storage.write_bytes(uris[name], video_strip(row))
    return uris


def video_strip(row: dict) -> bytes:
    """The frame strip of a manifest row's video, its low-res video above it when refined."""
    refined = row.get("refine") and row.get("low_res_uri") and row["low_res_uri"] != row["video_uri"]
    title = f"{row['prompt'][:80]}: MAWE {_number(row.get('mawe'))}, SCuts {_number(row.get('scuts'))}"
    return video_preview_png(read_video(row["video_uri"]), read_video(row["low_res_uri"]) if refined else None,
                             title=title)


def _number(value: float | None, signed: bool = False) -> str:
    return "—" if value is None else f"{value:+.4g}" if signed else f"{value:.4g}"


def summary_markdown(run: dict[str, Any], summary: dict[str, Any], previous: dict[str, Any] | None,
                     missing: dict[str, str], links: dict[str, str]) -> str:
    """Tonight's means against the previous run with the same settings and the paper's figures."""
    settings = history.settings_of(run)
    lines = [f"# Nightly benchmark `{run['run_id']}`", "",
             f"Started {run['run_started_at']:%Y-%m-%d %H:%M} UTC. Settings: "
             + ", ".join(f"{k}=`{v}`" for k, v in settings.items()) + ".",
             f"Videos: {summary['videos']} finished, {summary['failed']} failed.", ""]
    if previous is None:
        lines.append("No previous run with the same settings in the history.")
    else:
        lines.append(f"Previous run with the same settings: `{previous['run_id']}`, started "
                     f"{previous['run_started_at']:%Y-%m-%d %H:%M} UTC ({previous['videos']} videos).")
    lines += ["", "| metric | tonight | previous | delta | paper |", "|---|---|---|---|---|"]
    for name in history.VALUE_COLUMNS:
        before = None if previous is None else previous[name]
        delta = None if before is None or summary[name] is None else summary[name] - before
        figure = paper_figure(name, settings)
        paper = "—" if figure is None else f"{figure[0]:.4g} ({figure[1]})"
        lines.append(f"| {name} | {_number(summary[name])} | {_number(before)} | {_number(delta, True)} | {paper} |")
    lines += ["", "Paper figures are the paper's numbers for its real models (ModelScope Video-LDM + "
              "StreamingT2V) on 240-frame videos with flow at 720x720 (Sec. 5.2, App. D.3); timings are the "
              "authors' code on one A100-80GB. They are comparable only with those models and settings: the "
              "`tiny` preset has random weights, and its numbers are not comparable."]
    if missing:
        lines += ["", "Missing metrics:", *(f"* {name}: {reason}" for name, reason in sorted(missing.items()))]
    lines += ["", "Plots:", *(f"* {name}: `{uri}`" for name, uri in links.items())]
    return "\n".join(lines)


def unfinished_runs(output_uri: str, history_uri: str) -> list[str]:
    """The ids of the runs under ``output_uri`` that have a manifest but no summary in the history
    (a crash or a cancel stopped them before the end), sorted; pass one as ``run_id`` to finish it."""
    fs, root = storage.filesystem(output_uri)
    started = {posixpath.basename(posixpath.dirname(path)) for path in fs.glob(f"{root.rstrip('/')}/*/{MANIFEST_NAME}")}
    finished = {row["run_id"] for row in history.summaries(history.read_history(history_uri))}
    return sorted(started - finished)


def check_cam_variant(cam_variant: str, streaming_model: str | None, apm: bool) -> None:
    """The streaming model must be of the benchmarked variant; Conc-Cond has no APM."""
    from models.streaming_t2v import conditioning_of

    if cam_variant == "conc-cond":
        require(streaming_model is not None, "streaming_model", streaming_model,
                "a Conc-Cond model directory for cam_variant='conc-cond' (streamingt2v train --stage conc_cond)")
        require(not apm, "apm", apm, "False for cam_variant='conc-cond' (the baseline has no APM)")
    found = None if streaming_model is None else conditioning_of(streaming_model)
    require(found in (None, cam_variant), "streaming_model", streaming_model,
            f"a {cam_variant} model for cam_variant={cam_variant!r} (this directory holds a {found} model)")


@flow(name="nightly-benchmark", log_prints=True)
@takes_parameters(GenerationRequest, into="request", exclude=BATCH_EXCLUDED, defaults=NIGHTLY_DEFAULTS)
def nightly_benchmark(
    prompt_set: str | list[str] = "paper",
    output_uri: str = "outputs/nightly",
    history_uri: str = "outputs/nightly/history.parquet",
    cam_variant: str = "cam",
    ray_address: str = "",
    pools: str = "local",
    base_model: str | None = None,
    streaming_model: str | None = None,
    refiner: str | None = None,
    device: str = "cpu",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    low_memory: bool = False,
    metric_models: ModelPaths = ModelPaths(),
    raft_weights: str | None = None,
    flow_size: Annotated[int, Field(ge=FLOW_SIZES[0], le=FLOW_SIZES[1])] = 720,
    flow_estimator: Literal[FLOW_METHODS] = "dis-lk",
    run_id: str | None = None,
    request: dict | None = None,
) -> dict:
    """Benchmark one prompt set; returns the run id, URIs, counts and the metric means.

    ``prompt_set``: 'paper' (App. F), 'smoke' (2 short prompts), a list of prompts, or the URI of a
    CSV / Parquet / JSONL prompt file. ``metric_models``: local model files of the learned metrics
    (CLIP, aesthetic MLP, face models); a metric without its files is reported missing. Every
    parameter of ``GenerationRequest`` is a parameter of this flow too (default 240 frames, the
    paper's test length), and part of the run's settings in the history; the others as in
    generate-batch; ``flow_size``: frames are resized to this square for flow
    (paper: 720); ``flow_estimator``: the optical flow of the flow metrics (``dis-lk``, validated on
    videos with known motion; ``farneback`` to compare with rows measured by it; RAFT when
    ``raft_weights`` is given), recorded with the run's settings. ``run_id``: continue that run (its directory under ``output_uri``, e.g. one a crash
    or a cancel left unfinished; :func:`unfinished_runs` lists them): its finished videos are kept,
    the others resume from their last finished chunk, and its history rows are replaced. Default: a
    new run, named by the flow run's id.
    """
    from infra.cluster import ClusterConfig
    from stages.sources import ModelSources

    # Everything is validated before any work starts.
    request = with_preset_defaults(request)  # the run's settings as they are run and recorded
    require(run_id is None or RUN_ID.fullmatch(run_id) is not None, "run_id", run_id,
            "a run directory's name: letters, digits, '-' and '_' (1-64 characters), or None for a new run")
    require(cam_variant in CAM_VARIANTS, "cam_variant", cam_variant, f"one of {list(CAM_VARIANTS)}")
    sources = ModelSources(preset=request["preset"], base_model=base_model, streaming_model=streaming_model,
                           refiner=refiner, device=device, dtype=dtype, low_memory=low_memory)
    check_cam_variant(cam_variant, sources.location("streaming_model"), request["apm"])
    cluster = ClusterConfig.load(pools)
    label, rows = prompt_rows(prompt_set)
    try:
        requests = build_requests(rows, request)
    except ConfigError as exc:
        raise _prompt_set_error(exc) from None

    flow_config = FlowConfig(size=(flow_size, flow_size), raft_weights=raft_weights, method=flow_estimator)
    run = {"run_id": run_id or flow_run.id, "run_started_at": datetime.now(timezone.utc), "prompt_set": label,
           **request, "cam_variant": cam_variant, "flow_size": flow_size, "flow_estimator": flow_config.name}
    batch_uri = storage.join(output_uri, run["run_id"])
    manifest_uri = storage.join(batch_uri, MANIFEST_NAME)
    with OutputLease(batch_uri, ttl_s=lease_ttl_s()) as lease:  # a resumed run_id is written by one run at a time
        manifest = open_manifest(manifest_uri, run["run_id"], requests, sources.fingerprint())
        todo = [manifest.request(row["video_id"]) for row in manifest.pending()]
        run_on_ray(todo, manifest, manifest_uri, batch_uri, sources, cluster, ray_address, total=len(requests),
                   lease=lease)
        video_rows, missing = score_videos(manifest, manifest_uri, [r.video_id for r in requests], run,
                                           metric_models, flow_config)
    summary = {**run, **history.summarize(video_rows)}
    table = append_history(history_uri, video_rows, summary)
    settings = history.settings_of(run)
    previous = history.previous_summary(history_uri, run["run_id"], settings)
    plots_uri = storage.join(posixpath.dirname(history_uri) or ".", "plots", run["run_id"])
    finished = [row for row in manifest.rows.values() if row["status"] == "done"]
    links = publish_plots(plots_uri, history.summaries(table, settings), plots.worst_videos(finished, WORST_VIDEOS),
                          plots.best_video(finished))
    create_markdown_artifact(markdown=summary_markdown(run, summary, previous, missing, links), key=MARKDOWN_KEY,
                             description=f"nightly benchmark {run['run_id']}: {label}")
    get_run_logger().info("nightly benchmark %s: %d finished, %d failed; history %s", run["run_id"],
                          summary["videos"], summary["failed"], history_uri)
    return {"run_id": run["run_id"], "manifest": manifest_uri, "history": history_uri, "plots": links,
            "videos": summary["videos"], "failed": summary["failed"],
            "previous_run_id": None if previous is None else previous["run_id"],
            "means": {name: summary[name] for name in history.VALUE_COLUMNS}}
