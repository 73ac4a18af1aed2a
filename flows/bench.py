"""The performance harness (benchmarks/pipeline.py) at the top layer: the ``streamingt2v bench``
command, the orchestration figures (a generate-batch flow run on local Ray) and the Prefect flow
``bench`` that runs it on a schedule.

Each run measures one configuration (per-step time, FLOPs and MFU of every stage, the pipeline
end to end, peak memory, optionally the speed-up of each optimisation and the Ray/Prefect
overhead share), appends its row to the Parquet history and publishes a markdown table that
sets it beside the previous run of the same configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from benchmarks import pipeline
from benchmarks.pipeline import DEFAULT_HISTORY, BenchConfig, append_history, run
from benchmarks.steps import STAGES, Switches
from infra import storage
from infra.manifest import BatchManifest
from models.errors import ConfigError, require
from models.guidance import GuidanceWeights

MARKDOWN_KEY = "bench-summary"
SAME_CONFIGURATION = ("preset", "weights", "device", "dtype", "switches", "guidance")


def measure_orchestration(config: BenchConfig) -> dict[str, Any]:
    """The generate-batch flow (Prefect) on a local Ray cluster for ``orchestration_videos``
    prompts, against the seconds its stages spent on the engine's pools. The engine is long-lived
    (stages/engine.py): it is started, and its pools load their models, before the timed run, as
    Ray itself is (both are reported). For one video the stages run one after another, so the
    rest of the flow's wall time is the orchestration (Prefect flow and task runs, the stage task
    runs that mirror the engine, scheduling, object transfer, manifest commits): reported as a
    share of the wall time. Several videos overlap across the stage pools, so for them the figure
    is the throughput instead (videos per hour)."""
    from flows.generate_batch import generate_batch
    from stages.pools import start_ray

    # Without PREFECT_API_URL the flow runs against Prefect's ephemeral local server, which may
    # take more than the default 20 s to start on a busy machine; its start-up is not counted.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    prompts = [f"a {c} circle moving left on a striped background" for c in ("red", "blue", "green", "white")]
    prompts = (prompts * config.orchestration_videos)[: config.orchestration_videos]
    t0 = time.perf_counter()
    start_ray(num_cpus=2)
    ray_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    _engine_ready(config)
    engine_start = time.perf_counter() - t0
    _prefect_ready()
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as out:
        t0 = time.perf_counter()
        result = generate_batch(prompts=prompts, output_uri=out, num_frames=config.num_frames,
                                num_inference_steps=config.num_inference_steps, refine=config.refine,
                                refine_steps=config.refine_steps, preset="tiny")
        wall = time.perf_counter() - t0
        rows = list(BatchManifest.read(result["manifest"]).rows.values())
    require(all(r["status"] == "done" for r in rows), "orchestration", [r["status"] for r in rows], "all videos done")
    compute = sum((r["init_s"] or 0) + (r["extend_s"] or 0) + (r["refine_s"] or 0) for r in rows)
    return {"orch_videos": len(rows), "orch_ray_start_s": ray_start, "orch_engine_start_s": engine_start,
            "orch_flow_wall_s": wall,
            "orch_stage_compute_s": compute, "orch_videos_per_hour": 3600 * len(rows) / wall,
            "orch_overhead_share": 1 - compute / wall if len(rows) == 1 else None}


def _engine_ready(config: BenchConfig) -> None:
    """Start the engine of the local pools and have every pool load its model (a one-step video
    through each stage), as a long-lived engine on a cluster has."""
    import ray

    from infra.cluster import ClusterConfig
    from models.request import GenerationRequest
    from stages.engine import connect_engine, follow_videos
    from stages.sources import ModelSources
    from stages.workers import VideoJob

    engine = connect_engine(ModelSources(preset="tiny"), ClusterConfig.load("local"))
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as out:
        job = VideoJob(GenerationRequest("warm-up", num_frames=16, num_inference_steps=1, refine=config.refine,
                                         refine_steps=1, preset="tiny").params(), out)
        ray.get(engine.submit.remote([job], "batch", "bench"))
        follow_videos(engine, [job.request.video_id], 600)


def _prefect_ready() -> None:
    """Start (or reach) the Prefect API before timing, with a trivial flow run."""
    flow(name="bench-warm-up")(lambda: None)()


def previous_row(uri: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The newest earlier row of the same configuration in the history (None if there is none)."""
    if not storage.exists(uri):
        return None
    rows = storage.read_table(uri).to_pylist()
    same = [r for r in rows if r.get("run_id") != row["run_id"] and all(r.get(k) == row.get(k)
                                                                        for k in SAME_CONFIGURATION)]
    return same[-1] if same else None


def comparison_markdown(row: dict[str, Any], previous: dict[str, Any] | None) -> str:
    numbers = [k for k, v in row.items() if isinstance(v, float)]
    head = f"# bench {row['run_id']}: {row['preset']} on {row.get('device_name', row['device'])} ({row['dtype']})"
    lines = [head, "", f"Previous run of this configuration: `{previous['run_id']}`" if previous
             else "No previous run of this configuration.", "", "| figure | this run | previous | ratio |",
             "|---|---|---|---|"]
    for key in numbers:
        old = previous.get(key) if previous else None
        ratio = f"{row[key] / old:.3f}" if isinstance(old, float) and old else ""
        lines.append(f"| {key} | {row[key]:.4g} | {'' if old is None else f'{old:.4g}'} | {ratio} |")
    return "\n".join(lines)


@flow(name="bench", log_prints=True)
def bench(
    preset: Literal["tiny", "modelscope"] = "tiny",
    weights: Literal["random", "trained"] = "random",
    device: str = "cpu",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    stages: list[Literal["init", "extend", "refine"]] = list(STAGES),
    repeats: Annotated[int, Field(ge=1, le=100)] = 3,
    guidance_anchor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 7.5,
    num_frames: Annotated[int, Field(ge=0, le=4800)] = 48,
    num_inference_steps: Annotated[int, Field(ge=1, le=1000)] = 50,
    refine: bool = True,
    refine_steps: Annotated[int, Field(ge=1, le=1000)] = 50,
    channels_last: bool = False,
    compile: bool = False,
    ablations: bool = False,
    orchestration: bool = False,
    history_uri: str = DEFAULT_HISTORY,
) -> dict:
    """Measure one configuration; returns its history row."""
    config = BenchConfig(preset=preset, weights=weights, device=device, dtype=dtype,
                         switches=Switches(channels_last=channels_last, compile=compile), repeats=repeats,
                         guidance=GuidanceWeights(7.5, guidance_anchor), stages=tuple(stages), num_frames=num_frames,
                         num_inference_steps=num_inference_steps, refine=refine, refine_steps=refine_steps,
                         ablations=ablations, orchestration=orchestration, history=history_uri)
    row = run(config, measure_orchestration)
    previous = previous_row(history_uri, row)
    append_history(history_uri, row)
    create_markdown_artifact(markdown=comparison_markdown(row, previous), key=MARKDOWN_KEY,
                             description=f"bench {row['run_id']}")
    get_run_logger().info("bench %s: %s", row["run_id"], {k: row[k] for k in row if k.endswith("_step_s")})
    return row


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamingt2v bench", description=pipeline.__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", help="tiny | modelscope")
    p.add_argument("--weights", default="random", help="random (any preset) | trained (tiny, or with model paths)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of init,extend,refine")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per figure (median)")
    p.add_argument("--guidance-anchor", type=float, default=7.5,
                   help="anchor weight of Eq. 13 (7.5 = text weight: 2 branches; other values: 3-way guidance)")
    p.add_argument("--num-frames", type=int, default=48, help="end-to-end video length (0: skip)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of init/extend end to end")
    p.add_argument("--refine-steps", type=int, default=50)
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoisers")
    p.add_argument("--ablations", action="store_true", help="measure the speed-up of each optimisation")
    p.add_argument("--orchestration", action="store_true", help="Ray/Prefect overhead share (tiny)")
    p.add_argument("--orchestration-videos", type=int, default=1,
                   help="1: overhead share of one video; more: throughput of overlapping videos")
    p.add_argument("--flops-only", action="store_true", help="FLOPs per step at real sizes on the meta device")
    p.add_argument("--history", default=DEFAULT_HISTORY, help="Parquet history to append to (local or s3://)")
    return p


def bench_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        config = BenchConfig(
            preset=args.preset, weights=args.weights, device=args.device, dtype=args.dtype,
            switches=Switches(channels_last=args.channels_last, compile=args.compile), repeats=args.repeats,
            guidance=GuidanceWeights(7.5, args.guidance_anchor), stages=tuple(s for s in args.stages.split(",") if s),
            num_frames=args.num_frames, num_inference_steps=args.steps, refine_steps=args.refine_steps,
            refine=not args.no_refine, ablations=args.ablations, orchestration=args.orchestration,
            orchestration_videos=args.orchestration_videos, flops_only=args.flops_only, history=args.history)
    except (ConfigError, ValueError) as exc:
        print(f"streamingt2v bench: error: {exc}", file=sys.stderr)
        return 2
    row = run(config, measure_orchestration)
    append_history(config.history, row)
    print(json.dumps(row, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
