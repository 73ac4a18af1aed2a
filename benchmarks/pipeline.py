"""The performance harness: per-step time, FLOPs and MFU of every stage, the whole pipeline end
to end, peak memory, the speed-up of each optimisation, and the orchestration's share of wall time.

    streamingt2v bench --preset tiny --num-frames 48                       # CPU figures
    streamingt2v bench --preset modelscope --weights random --device cuda --dtype bfloat16 --ablations
    streamingt2v bench --preset modelscope --flops-only                    # real-size FLOPs, no GPU

Every run appends one row to a Parquet history (``--history``, local or s3://) and prints it as
JSON, so runs accumulate and compare. Figures are measured, never estimated: MFU is counted FLOPs
per measured second over the device's peak (:mod:`benchmarks.hardware`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from benchmarks import hardware
from benchmarks.steps import STAGES, StepFigures, Switches, cfg_step, extend_step, meta_step_flops, prepare, \
    refine_step, time_step
from infra import storage
from models.errors import ConfigError, require
from models.guidance import GuidanceWeights

DEFAULT_HISTORY = "outputs/bench/history.parquet"
# Each optimisation, as the switches that turn it off (its speed-up = time without / time with).
ABLATIONS: dict[str, dict[str, bool]] = {
    "batched_guidance": {"batched_guidance": False},
    "econd_reuse": {"reuse_econd": False},
    "sdpa": {"sdpa": False},
}
# ... and the ones that are off by default (speed-up = time default / time with the switch on).
OPT_INS: dict[str, dict[str, bool]] = {"channels_last": {"channels_last": True}, "compile": {"compile": True}}


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "tiny"
    weights: str = "random"  # random | trained (tiny); compute does not depend on weight values
    device: str = "cpu"
    dtype: str = "float32"
    switches: Switches = field(default_factory=Switches)
    repeats: int = 3
    guidance: GuidanceWeights = field(default_factory=GuidanceWeights)
    stages: tuple[str, ...] = STAGES
    num_frames: int = 48  # end to end; 0 skips it
    num_inference_steps: int = 50
    refine_steps: int = 50
    refine: bool = True
    ablations: bool = False
    orchestration: bool = False
    orchestration_videos: int = 1
    flops_only: bool = False
    history: str = DEFAULT_HISTORY

    def __post_init__(self) -> None:
        from stages.sources import ModelSources

        ModelSources(preset=self.preset, weights=self.weights, device=self.device, dtype=self.dtype)
        require(self.repeats >= 1, "repeats", self.repeats, "an integer >= 1")
        require(set(self.stages) <= set(STAGES) and self.stages, "stages", self.stages, f"a subset of {STAGES}")
        require(self.num_frames == 0 or self.num_frames >= 16, "num_frames", self.num_frames, "0 (skip) or >= 16")
        require(self.orchestration_videos >= 1, "orchestration_videos", self.orchestration_videos, "an integer >= 1")
        require(not self.orchestration or self.preset == "tiny", "orchestration", True,
                "False unless preset='tiny' (the overhead is measured on the local Ray/Prefect stack)")

    def sources(self):
        from stages.sources import ModelSources

        return ModelSources(preset=self.preset, weights=self.weights, device=self.device, dtype=self.dtype)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _gpu_peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


class Harness:
    """Loads the three models once and measures them under any switches."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        sources = config.sources()
        self.sources = sources
        self.models = {stage: self._load(stage) for stage in config.stages}
        self._flops: dict[tuple[str, int], float] = {}

    def _load(self, stage: str):
        return {"init": self.sources.load_video_ldm, "extend": self.sources.load_streaming,
                "refine": self.sources.load_refiner}[stage]()

    def step(self, stage: str, switches: Switches) -> StepFigures:
        model = self.models[stage]
        prepare(model, switches)
        if stage == "init":
            v = model.video
            fn, shape, branches = cfg_step(model, v.frames_per_chunk, v.height, v.width, switches)
        elif stage == "extend":
            fn, shape, branches = extend_step(model, switches, self.config.guidance)
        else:
            fn, shape, branches = refine_step(model, self.sources.refine_config(), switches)
        key = (stage, branches)
        figures = time_step(stage, fn, shape, branches, switches, self.device, self.config.repeats,
                            flops=None if switches.compile else self._flops.get(key))
        self._flops.setdefault(key, figures.flops)
        return figures

    def steps(self, switches: Switches, peak: hardware.Peak) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for stage in self.config.stages:
            _reset_gpu_peak(self.device)
            f = self.step(stage, switches)
            row.update({f"{stage}_step_s": f.seconds, f"{stage}_step_tflop": f.flops / 1e12,
                        f"{stage}_mfu": f.flops_per_s / peak.flops, f"{stage}_branches": f.branches,
                        f"{stage}_latent_shape": "x".join(map(str, f.shape)),
                        f"{stage}_gpu_peak_mb": _gpu_peak_mb(self.device)})
        return row

    def ablations(self) -> dict[str, Any]:
        """Speed-up of each optimisation on each stage's step (>1: the optimisation pays)."""
        base = self.config.switches
        row: dict[str, Any] = {}
        default_times = {s: self.step(s, base).seconds for s in self.config.stages}
        for name, off in ABLATIONS.items():
            for stage in self.config.stages:
                if name == "econd_reuse" and stage != "extend":
                    continue
                without = self.step(stage, replace(base, **off)).seconds
                row[f"speedup_{name}_{stage}"] = without / default_times[stage]
        for name, on in OPT_INS.items():
            for stage in self.config.stages:
                try:
                    with_it = self._fresh_step(stage, replace(base, **on)).seconds
                except Exception as exc:  # e.g. no C++ compiler for inductor on this machine
                    row[f"speedup_{name}_{stage}"] = None
                    row[f"error_{name}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    continue
                row[f"speedup_{name}_{stage}"] = default_times[stage] / with_it
        return row

    def _fresh_step(self, stage: str, switches: Switches) -> StepFigures:
        """A step on a freshly loaded model (memory format and compilation change the model)."""
        kept = self.models[stage]
        self.models[stage] = self._load(stage)
        try:
            return self.step(stage, switches)
        finally:
            self.models[stage] = kept


def end_to_end(config: BenchConfig, harness: Harness | None = None) -> dict[str, Any]:
    """One video through the product's in-process path (stages.generate); seconds per stage,
    per chunk and per video, and frames of final video per second."""
    from infra.run_store import RunStore
    from models.request import GenerationRequest
    from stages.generate import Stages, generate_video
    from stages.init_chunk import InitChunkStage
    from stages.extend import AutoregressiveExtendStage
    from stages.refine import RefineStage

    request = GenerationRequest("a red circle moving left on a striped background", num_frames=config.num_frames,
                                seed=0, num_inference_steps=config.num_inference_steps, refine=config.refine,
                                refine_steps=config.refine_steps, preset=config.preset)
    sources = config.sources()
    models = harness.models if harness and set(harness.models) == set(STAGES) else {}
    stages = Stages(InitChunkStage(models.get("init") or sources.load_video_ldm()),
                    AutoregressiveExtendStage(models.get("extend") or sources.load_streaming()),
                    RefineStage(models.get("refine") or sources.load_refiner(), sources.refine_config())
                    if config.refine else None)
    device = torch.device(config.device)
    _reset_gpu_peak(device)
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        t0 = time.perf_counter()
        record = generate_video(request, stages, RunStore(out, request.video_id))
        wall = time.perf_counter() - t0
    t = record["timings"]
    chunks = record["chunks"]["total"]
    return {"e2e_num_frames": record["frames"], "e2e_chunks": chunks, "e2e_low_res_s": t["low_res_s"],
            "e2e_refine_s": t.get("refine_s"), "e2e_total_s": wall, "e2e_s_per_chunk": t["low_res_s"] / chunks,
            "e2e_video_fps": record["frames"] / wall, "e2e_gpu_peak_mb": _gpu_peak_mb(device),
            "e2e_final_size": f"{record['size']['height']}x{record['size']['width']}"}


def orchestration(config: BenchConfig) -> dict[str, Any]:
    """The generate-batch flow (Prefect) on a local Ray cluster for ``orchestration_videos``
    prompts, against the seconds its stage actors spent computing. For one video the stages run
    one after another, so the rest of the flow's wall time is the orchestration (Prefect flow and
    task runs, actor start-up with model loading, scheduling, object transfer, manifest commits):
    reported as a share of the wall time. Several videos overlap across the stage pools, so for
    them the figure is the throughput instead (videos per hour)."""
    import os

    from flows.generate_batch import generate_batch
    from infra.manifest import BatchManifest
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
    return {"orch_videos": len(rows), "orch_ray_start_s": ray_start, "orch_flow_wall_s": wall,
            "orch_stage_compute_s": compute, "orch_videos_per_hour": 3600 * len(rows) / wall,
            "orch_overhead_share": 1 - compute / wall if len(rows) == 1 else None}


def _prefect_ready() -> None:
    """Start (or reach) the Prefect API before timing, with a trivial flow run."""
    from prefect import flow

    flow(name="bench-warm-up")(lambda: None)()


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure and return one history row (see the module docstring)."""
    row: dict[str, Any] = {
        "run_id": uuid.uuid4().hex[:12], "started_at": datetime.now(timezone.utc), "git_commit": _git_commit(),
        "preset": config.preset, "weights": config.weights, "device": config.device, "dtype": config.dtype,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "switches": config.switches.label(),
        "guidance": f"{config.guidance.text}/{config.guidance.anchor}",
    }
    if config.flops_only:
        for stage, flops in meta_step_flops(config.preset, config.guidance).items():
            row[f"{stage}_step_tflop"] = flops / 1e12
        return row
    device = torch.device(config.device)
    peak = hardware.peak(device, config.sources().torch_dtype)
    row.update({"device_name": peak.device, "peak_precision": peak.precision, "peak_tflops": peak.flops / 1e12,
                "peak_source": peak.source})
    harness = Harness(config)
    row.update(harness.steps(config.switches, peak))
    if config.ablations:
        row.update(harness.ablations())
    if config.num_frames:
        row.update(end_to_end(config, harness))
    if config.orchestration:
        row.update(orchestration(config))
    row["peak_rss_mb"] = _peak_rss_mb()
    return row


def append_history(uri: str, row: dict[str, Any]) -> pa.Table:
    """Append one row to the Parquet history at ``uri`` (columns are the union over runs) and
    commit it atomically."""
    new = pa.Table.from_pylist([row])
    if storage.exists(uri):
        new = pa.concat_tables([storage.read_table(uri), new], promote_options="permissive")
    storage.write_table(uri, new)
    return new


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamingt2v bench", description=__doc__.split("\n\n")[0])
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
    row = run(config)
    append_history(config.history, row)
    print(json.dumps(row, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
