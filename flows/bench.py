"""Prefect flow ``bench``: the performance harness (benchmarks/pipeline.py) as a scheduled run.

Each run measures one configuration (per-step time, FLOPs and MFU of every stage, the pipeline
end to end, peak memory, optionally the speed-up of each optimisation and the Ray/Prefect
overhead share), appends its row to the Parquet history and publishes a markdown table that
sets it beside the previous run of the same configuration.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from benchmarks.pipeline import DEFAULT_HISTORY, BenchConfig, append_history, run
from benchmarks.steps import STAGES, Switches
from infra import storage
from models.guidance import GuidanceWeights

MARKDOWN_KEY = "bench-summary"
SAME_CONFIGURATION = ("preset", "weights", "device", "dtype", "switches", "guidance")


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
    row = run(config)
    previous = previous_row(history_uri, row)
    append_history(history_uri, row)
    create_markdown_artifact(markdown=comparison_markdown(row, previous), key=MARKDOWN_KEY,
                             description=f"bench {row['run_id']}")
    get_run_logger().info("bench %s: %s", row["run_id"], {k: row[k] for k in row if k.endswith("_step_s")})
    return row
