"""Does the toy refiner keep and sharpen what the first two stages made? The table of
docs/toyworld.md ("Refinement"), on the held-out toy prompts::

    python -m studies.refiner_quality --num-frames 240 --out outputs/refiner-quality \\
        [--compare NAME=MODEL_DIR@HxW[xCANVAS_HxCANVAS_W][,refine_steps=N][,refine_guidance=W] ...]

For each prompt it generates the low-resolution video once (the tiny preset's defaults: those of
the README's first command), refines it with the shipped refiner and with every ``--compare``
refiner at its own geometry and settings, and measures, per refiner, the means over the prompts of:
object presence (:mod:`toyworld.tracking`) at low res and refined, PSNR of the refined video
reduced to the low-res size against the low-res video, sharpness of the refined video and of the
bicubic upscale (:mod:`evaluation.fidelity`), and SCuts and flow-magnitude std of both (flow at
``--flow-size``, :mod:`evaluation.metrics`). It prints a markdown table and writes every video;
a rerun with the same ``--out`` reuses the low-res frames and refined videos already there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluation.fidelity import fidelity
from evaluation.metrics import FlowConfig, flow_magnitude_std, scene_cuts
from infra.video_io import to_uint8, write_mp4
from models.errors import ConfigError
from models.request import GenerationRequest
from toyworld.dataset import HELD_OUT_PROMPTS
from toyworld.tracking import object_motion


@dataclass(frozen=True)
class Refiner:
    """A refiner to compare: its name, model directory (None: the shipped one) and geometry."""

    name: str
    model: str | None = None
    geometry: dict = field(default_factory=dict)  # RefineConfig fields; empty: the preset's
    settings: dict = field(default_factory=dict)  # request overrides: refine_steps, refine_guidance

    @classmethod
    def parse(cls, text: str) -> "Refiner":
        """NAME=MODEL_DIR@HxW[xCANVAS_HxCANVAS_W][,refine_steps=N][,refine_guidance=W]."""
        try:
            name, rest = text.split("=", 1)
            spec, *options = rest.split(",")
            model, size = spec.rsplit("@", 1)
            numbers = [int(v) for v in size.split("x")]
            h, w = numbers[:2]
            ch, cw = numbers[2:4] if len(numbers) == 4 else (h, w)
            settings = {}
            for option in options:
                key, value = option.split("=")
                settings[key] = {"refine_steps": int, "refine_guidance": float}[key](value)
        except (ValueError, KeyError):
            raise ConfigError("compare", text, "NAME=MODEL_DIR@HxW[xCANVAS_HxCANVAS_W][,refine_steps=N]"
                              "[,refine_guidance=W]") from None
        return cls(name, model, dict(target_height=h, target_width=w, canvas_height=ch, canvas_width=cw), settings)


@dataclass
class Row:
    """One refiner's figures, a value per prompt each."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **figures: float) -> None:
        for k, v in figures.items():
            self.values.setdefault(k, []).append(float(v))

    def mean(self, key: str) -> float:
        return float(np.mean(self.values[key]))


COLUMNS = ("presence_low_res", "presence_refined", "psnr_to_low_res", "sharpness_bicubic", "sharpness_refined",
           "scuts_low_res", "scuts_refined", "flow_std_low_res", "flow_std_refined")


def refine_stage(refiner: Refiner, stages):
    """The shipped refine stage, or one with another model and geometry."""
    from stages.refine import RefineStage
    from stages.sources import ModelSources

    if refiner.model is None:
        return stages.refine
    model = ModelSources(preset="tiny", refiner=refiner.model).load_refiner()
    return RefineStage(model, replace(stages.refine.config, **refiner.geometry) if refiner.geometry
                       else stages.refine.config)


def run(num_frames: int, out: Path, refiners: list[Refiner], flow_size: int, prompts: tuple[str, ...],
        log=print) -> dict[str, Row]:
    from stages.extend import generate_low_res
    from stages.generate import Stages
    from stages.sources import ModelSources

    stages = Stages.load(ModelSources(preset="tiny"))
    flow = FlowConfig(size=(flow_size, flow_size))
    rows = {r.name: Row() for r in refiners}
    out.mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(prompts):
        request = GenerationRequest(prompt, num_frames=num_frames)
        cached = out / f"{i}.lowres.npy"
        if cached.exists():
            low_res = np.load(cached)
        else:
            low_res = to_uint8(generate_low_res(request, stages.init, stages.extend))
            write_mp4(low_res, str(out / f"{i}.lowres.mp4"), request.fps)
            np.save(cached, low_res)
        low_motion = object_motion(low_res, prompt, request.fps)
        low_cuts, low_std = scene_cuts(low_res, request.fps), flow_magnitude_std(low_res, flow)
        for refiner in refiners:
            cached = out / f"{i}.{refiner.name}.npy"
            if cached.exists():
                refined = np.load(cached)
            else:
                refined = refine_stage(refiner, stages)(replace(request, **refiner.settings), low_res)
                write_mp4(refined, str(out / f"{i}.{refiner.name}.mp4"), request.fps)
                np.save(cached, refined)
            f = fidelity(low_res, refined)
            rows[refiner.name].add(
                presence_low_res=low_motion.presence, presence_refined=object_motion(refined, prompt, request.fps).presence,
                psnr_to_low_res=f.psnr_to_low_res, sharpness_bicubic=f.sharpness_bicubic,
                sharpness_refined=f.sharpness_refined, scuts_low_res=low_cuts,
                scuts_refined=scene_cuts(refined, request.fps), flow_std_low_res=low_std,
                flow_std_refined=flow_magnitude_std(refined, flow))
            log(f"{i} {refiner.name}: " + ", ".join(f"{k} {v[-1]:.4g}" for k, v in rows[refiner.name].values.items()))
    return rows


def table(rows: dict[str, Row], refiners: list[Refiner]) -> str:
    lines = ["| refiner | size | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for r in refiners:
        size = f"{r.geometry['target_height']}x{r.geometry['target_width']}" if r.geometry else "preset"
        lines.append(f"| {r.name} | {size} | " + " | ".join(f"{rows[r.name].mean(c):.4g}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.refiner_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-frames", type=int, default=240)
    parser.add_argument("--out", default="outputs/refiner-quality")
    parser.add_argument("--compare", action="append", default=[], help="NAME=MODEL_DIR@HxW[xCANVAS_HxCANVAS_W]")
    parser.add_argument("--flow-size", type=int, default=128, help="flow computed at this size (both videos)")
    parser.add_argument("--prompts", type=int, default=len(HELD_OUT_PROMPTS), help="the first N held-out prompts")
    args = parser.parse_args(argv)
    try:
        refiners = [Refiner("shipped"), *(Refiner.parse(c) for c in args.compare)]
        rows = run(args.num_frames, Path(args.out), refiners, args.flow_size, HELD_OUT_PROMPTS[:args.prompts],
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    except ConfigError as exc:
        print(f"refiner_quality: error: {exc}", file=sys.stderr)
        return 2
    print(table(rows, refiners))
    return 0


if __name__ == "__main__":
    sys.exit(main())
