"""The performance harness: per-step time, FLOPs and MFU of every stage, the whole pipeline end
to end, peak memory, the speed-up of each optimisation, and the orchestration's share of wall time.

    streamingt2v bench --preset tiny --num-frames 48                       # CPU figures
    streamingt2v bench --preset modelscope --weights random --device cuda --dtype bfloat16 --ablations
    streamingt2v bench --preset modelscope --flops-only                    # real-size FLOPs, no GPU

Every run appends one row to a Parquet history (``--history``, local or s3://) and prints it as
JSON, so runs accumulate and compare. Figures are measured, never estimated: MFU is counted FLOPs
per measured second over the device's peak (:mod:`benchmarks.hardware`). The command line and the
orchestration figures (a generate-batch flow run on local Ray) are in :mod:`flows.bench`.
"""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from benchmarks import hardware
from benchmarks.steps import STAGES, StepFigures, Switches, cfg_step, extend_step, meta_step_flops, prepare, \
    refine_step, time_step
from infra import storage
from models.errors import require
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


def run(config: BenchConfig, orchestration: Callable[[BenchConfig], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure and return one history row (see the module docstring). With
    ``config.orchestration``, ``orchestration(config)`` adds the Ray/Prefect overhead figures: the
    flows layer passes it (:func:`flows.bench.measure_orchestration`), as measuring it runs a flow."""
    require(orchestration is not None or not config.orchestration or config.flops_only, "orchestration", True,
            "False here; `streamingt2v bench --orchestration` and the bench flow measure it")
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
