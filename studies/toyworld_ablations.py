"""The toy-world ablation table: CAM vs the Conc-Cond baseline (paper Sec. 5.3,
App. D.1; the bar: CAM has fewer SCuts), randomized blending vs independent chunks in the
refiner (Sec. 4.3, Fig. 6; the bar: randomized blending has a lower std of the flow magnitude),
and the shipped model's own low-resolution videos (the toy model's bar: no hard cuts).

Each row is one run of the nightly-benchmark flow (the generate-batch path plus the evaluation
metrics) on the held-out toy prompts, so every figure is from a real run and lands in the same
versioned history as the nightly runs::

    python -m studies.toyworld_ablations --num-frames 240 --steps 50 --pools studies/toyworld_pools.yaml

The conditioning rows default to the stage-1 models shipped under ``toyworld/weights/ablation``
(``--cam-model`` and ``--conc-cond-model`` take others).

CAM and Conc-Cond are compared without APM (Conc-Cond has none; CAM stage 1 is the model trained
with the same budget) and without refinement (the conditioning is what differs); the blending
rows use the default toy-world models with refinement on; the shipped row uses them with APM and
without refinement.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from infra.cluster import ClusterConfig
from models.errors import ConfigError, require
from toyworld.dataset import HELD_OUT_PROMPTS
from toyworld.weights import ablation_model

METRICS = ("scuts", "flow_magnitude_std", "mawe", "ofs")
"""Columns of the table (the nightly flow's metric means)."""

TRACKING = ("presence", "speed_along", "along_fraction")
"""Columns from the toy world's object tracking (toyworld.tracking), means over the row's videos:
does the captioned object stay, and does it move the captioned way (the toy model's bar)."""

SOURCE_OPTIONS = ("base_model", "streaming_model", "refiner")
"""Model overrides of the blending and shipped rows (nightly-benchmark parameters)."""

COMPARISONS = ("conditioning", "blending", "shipped")
"""CAM vs Conc-Cond and randomized blending vs independent chunks (two rows each), and the shipped
model's low-resolution videos (one row)."""

ROWS = {"cam": "conditioning", "conc-cond": "conditioning", "randomized": "blending", "independent": "blending",
        "shipped": "shipped"}
"""Each row's key (its run directory under the output URI) and its comparison. One row can run
alone (`--rows`): each row is its own seeded run, so its figures do not depend on which other
rows run in the same call."""

MODEL_OF_ROW = {"cam": "cam_model", "conc-cond": "conc_cond_model"}
"""The conditioning rows' model fields."""


@dataclass(frozen=True)
class Ablation:
    """One row: a label, the nightly-benchmark parameters that make it, and what the paper says."""

    key: str  # a ROWS key: the row's run directory under the output URI
    label: str
    params: dict
    expectation: str


@dataclass(frozen=True)
class AblationConfig:
    cam_model: str | None = None
    conc_cond_model: str | None = None
    num_prompts: int = len(HELD_OUT_PROMPTS)
    num_frames: int = 240
    steps: int = 50
    refine_steps: int = 50
    refine_guidance: float = 7.5  # the paper's; the table's rows are measured with it
    flow_size: int = 720  # the paper's, where the flow estimator is validated (docs/metrics.md)
    flow_estimator: str = "dis-lk"
    seed: int = 0
    output_uri: str = "outputs/toyworld-ablations"
    sources: dict = field(default_factory=dict)  # SOURCE_OPTIONS overrides
    pools: str = "local"  # the stage pools' profile or YAML file (infra.cluster)
    comparisons: tuple[str, ...] = COMPARISONS
    condition_replacement: bool = False  # every row's extension chunks (models.streaming_t2v.ConditionReplacement)
    rows: tuple[str, ...] | None = None  # ROWS keys to run, within `comparisons`; None: all of their rows
    resume: bool = False  # each row continues its unfinished run under output_uri, if it has one

    def __post_init__(self) -> None:
        require(1 <= self.num_prompts <= len(HELD_OUT_PROMPTS), "num_prompts", self.num_prompts,
                f"1..{len(HELD_OUT_PROMPTS)} (the held-out toy prompts)")
        ClusterConfig.load(self.pools)  # a ConfigError naming `pools` before any run starts
        require(bool(self.comparisons) and set(self.comparisons) <= set(COMPARISONS), "comparisons",
                self.comparisons, f"a non-empty subset of {COMPARISONS}")
        if self.rows is not None:
            allowed = self._comparison_rows()
            require(bool(self.rows) and set(self.rows) <= set(allowed), "rows", self.rows,
                    f"a non-empty subset of {tuple(allowed)} (the rows of {self.comparisons})")
        for key in self.row_keys():
            if key in MODEL_OF_ROW:
                name = MODEL_OF_ROW[key]
                require(bool(getattr(self, name)), name, getattr(self, name),
                        f"a model directory (the {key} row's; the command line takes the one shipped under "
                        "toyworld/weights/ablation when present)")

    def _comparison_rows(self) -> list[str]:
        """The keys of every row of the chosen comparisons, in the table's order."""
        return [key for key, comparison in ROWS.items() if comparison in self.comparisons]

    def row_keys(self) -> list[str]:
        """The keys of the rows to run, in the table's order."""
        return [key for key in self._comparison_rows() if self.rows is None or key in self.rows]

    def ablations(self) -> list[Ablation]:
        low_res = {"apm": False, "refine": False}
        refined = {**self.sources, "refine": True}
        rows = [
            Ablation("cam", "CAM (stage 1, no APM)", {**low_res, "streaming_model": self.cam_model},
                     "fewer SCuts than Conc-Cond"),
            Ablation("conc-cond", "Conc-Cond",
                     {**low_res, "streaming_model": self.conc_cond_model, "cam_variant": "conc-cond"},
                     "more SCuts than CAM"),
            Ablation("randomized", "randomized blending", {**refined, "blend": "randomized"},
                     "lower flow-magnitude std than independent chunks"),
            Ablation("independent", "independent chunks", {**refined, "blend": "independent"},
                     "higher flow-magnitude std than randomized blending"),
            Ablation("shipped", "shipped model (CAM+APM), low res", {**self.sources, "refine": False},
                     "no SCuts (long videos without hard cuts)"),
        ]
        keys = self.row_keys()
        return [row for row in rows if row.key in keys]

    def common(self) -> dict:
        return {"prompt_set": list(HELD_OUT_PROMPTS[:self.num_prompts]), "num_frames": self.num_frames,
                "num_inference_steps": self.steps, "refine_steps": self.refine_steps,
                "refine_guidance": self.refine_guidance, "seed": self.seed,
                "flow_size": self.flow_size, "flow_estimator": self.flow_estimator, "preset": "tiny", "pools": self.pools,
                "condition_replacement": self.condition_replacement,
                "history_uri": f"{self.output_uri}/history.parquet"}

    def row_uri(self, key: str) -> str:
        """A row's output URI: its nightly runs' directories are under it."""
        return f"{self.output_uri}/{key}"


def resumed_run(config: AblationConfig, key: str) -> str | None:
    """The run a row continues with ``resume``: its one unfinished run under the output URI, or None."""
    from flows.nightly_benchmark import unfinished_runs

    runs = unfinished_runs(config.row_uri(key), config.common()["history_uri"])
    require(len(runs) <= 1, "resume", runs,
            f"at most one unfinished run of the {key} row under {config.row_uri(key)} (remove the others)")
    return runs[0] if runs else None


def run(config: AblationConfig) -> list[dict]:
    """Run every ablation through the nightly-benchmark flow; one result row each. With ``resume``,
    a row that a crash or a cancel left unfinished keeps its finished videos and chunks."""
    from flows.nightly_benchmark import nightly_benchmark

    rows = []
    for ablation in config.ablations():
        run_id = resumed_run(config, ablation.key) if config.resume else None
        result = nightly_benchmark(**config.common(), **ablation.params,
                                   output_uri=config.row_uri(ablation.key), run_id=run_id)
        rows.append({"label": ablation.label, "expectation": ablation.expectation, "run_id": result["run_id"],
                     "videos": result["videos"], "failed": result["failed"],
                     **{m: result["means"].get(m) for m in METRICS}, **tracking_means(result["manifest"])})
    return rows


def tracking_means(manifest_uri: str) -> dict[str, float | None]:
    """:data:`TRACKING` means over the finished videos of one run (each its final video: refined
    when the run refines, else low resolution); None where no video has a value."""
    from infra.manifest import BatchManifest
    from infra.video_io import read_video
    from toyworld.tracking import object_motion

    values: dict[str, list[float]] = {name: [] for name in TRACKING}
    for row in BatchManifest.read(manifest_uri).rows.values():
        uri = row["video_uri"] or row["low_res_uri"]
        if row["status"] != "done" or not uri:
            continue
        for name, value in object_motion(read_video(uri), row["prompt"], row["fps"]).as_dict().items():
            if value == value:  # nan: the object never showed
                values[name].append(value)
    return {name: (sum(v) / len(v) if v else None) for name, v in values.items()}


def markdown(rows: list[dict], config: AblationConfig) -> str:
    """The ablation table in markdown, with the settings that produced it."""
    head = ("| variant | SCuts | flow-magnitude std | MAWE | OFS | object presence | speed along caption (widths/s) "
            "| windows moving the captioned way | videos | paper's direction |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['label']} | " + " | ".join("n/a" if r[m] is None else f"{r[m]:.4g}" for m in METRICS + TRACKING)
        + f" | {r['videos']} | {r['expectation']} |\n" for r in rows)
    settings = (f"\n{config.num_prompts} held-out toy prompts, {config.num_frames} frames, seed {config.seed}, "
                f"{config.steps} DDIM steps (refine {config.refine_steps}), flow at {config.flow_size}x"
                f"{config.flow_size} ({config.flow_estimator})" + (", condition replacement" if config.condition_replacement else "") + ".\n")
    return head + body + settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.toyworld_ablations", description=__doc__.split("\n\n")[0])
    for stage in ("cam", "conc_cond"):
        shipped = ablation_model(f"ablation/{stage}")
        p.add_argument(f"--{stage.replace('_', '-')}-model", default=str(shipped) if shipped else None,
                       help=f"the model of `train --stage {stage}` for the conditioning rows "
                            f"(default: the shipped toyworld/weights/ablation/{stage}, if any)")
    p.add_argument("--only", choices=COMPARISONS, default=None, help="run one comparison's rows (default: all)")
    p.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=None,
                   help="run only these rows (within --only's comparison), e.g. `--rows cam`; a row's figures "
                        "do not depend on the other rows of the call")
    p.add_argument("--resume", action="store_true",
                   help="each row continues its unfinished run under --out (one a crash or a cancel stopped): "
                        "finished videos are kept, the others resume from their last finished chunk")
    p.add_argument("--num-prompts", type=int, default=len(HELD_OUT_PROMPTS))
    p.add_argument("--num-frames", type=int, default=240)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--refine-steps", type=int, default=50)
    p.add_argument("--flow-size", type=int, default=720,
                   help="flow metrics at SIZE x SIZE (paper: 720, where the flow estimator is validated)")
    p.add_argument("--flow-estimator", default="dis-lk", help="dis-lk | farneback (docs/metrics.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/toyworld-ablations")
    p.add_argument("--pools", default="local",
                   help="stage pools: a profile (local, gpu) or a YAML file, as for generate-batch")
    p.add_argument("--condition-replacement", action="store_true",
                   help="beyond the paper: every row's extension chunks pin their re-covering frames to the "
                        "previous chunk's noised latents")
    for name in SOURCE_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", default=None,
                       help="override the default toy-world model for the blending and shipped rows")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sources = {name: getattr(args, name) for name in SOURCE_OPTIONS if getattr(args, name) is not None}
    try:
        config = AblationConfig(
            cam_model=args.cam_model, conc_cond_model=args.conc_cond_model, num_prompts=args.num_prompts,
            num_frames=args.num_frames, steps=args.steps, refine_steps=args.refine_steps, flow_size=args.flow_size,
            flow_estimator=args.flow_estimator, seed=args.seed, output_uri=args.out, sources=sources,
            pools=args.pools, comparisons=(args.only,) if args.only else COMPARISONS,
            condition_replacement=args.condition_replacement, rows=tuple(args.rows) if args.rows else None,
            resume=args.resume)
    except ConfigError as exc:
        print(f"toyworld_ablations: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(run(config), config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
