"""Does the default toy model follow its prompt? The figure of docs/toyworld.md ("Prompt
following")::

    python -m studies.prompt_following [--set random|held-out] [--seed 0] [--out DIR]

Each prompt is generated as the README's first command would (the tiny preset's defaults), 16
frames without refinement, and follows its prompt when the captioned object shows in at least
:data:`FOLLOWS` of the frames: its colour forms one region of at least half the smallest object
the world draws (:func:`toyworld.tracking.largest_blob`). The colour's presence alone
(:func:`toyworld.tracking.object_motion`, a few pixels) is printed beside it; specks of the colour
in a texture make it without an object. ``random``
takes two prompts per colour with a seeded random shape, direction and background; ``held-out``
the eight held-out prompts, whose attribute combinations training never shows. It prints one row
per prompt and the count, and with ``--out`` writes each video's frames as a PNG strip.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import cache

import numpy as np

from toyworld.dataset import HELD_OUT_PROMPTS
from toyworld.scenes import (BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SIZE_RANGE, SPINNABLE, Scene, render,
                             scene_for_caption)
from toyworld.tracking import largest_blob, object_motion

FOLLOWS = 0.8  # share of frames that must show an object of the captioned colour
NUM_FRAMES = 16
PER_COLOUR = 2


def random_prompts(seed: int = 0, per_colour: int = PER_COLOUR) -> list[str]:
    """``per_colour`` captions per colour of the toy world, each with a random shape, direction,
    background and spin (seeded)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for colour in COLOURS:
        for _ in range(per_colour):
            shape = SHAPES[rng.integers(len(SHAPES))]
            direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
            background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
            spinning = bool(shape in SPINNABLE and rng.random() < 0.5)
            prompts.append(Scene(shape, colour, direction, background, spinning).caption)
    return prompts


@cache
def object_share() -> float:
    """Half the share of the frame that the smallest object of the world covers (a shape drawn at
    the smallest sampled size, measured as :func:`largest_blob` measures it)."""
    areas = [largest_blob(render(Scene(shape, "red", "left", "striped", size=SIZE_RANGE[0]), 1)[0],
                          COLOURS["red"]) for shape in SHAPES]
    return min(areas) / 2


@dataclass(frozen=True)
class Following:
    prompt: str
    presence: float  # share of frames showing the captioned colour (a few pixels)
    object_presence: float  # share of frames where the colour forms an object (:func:`object_share`)

    @property
    def follows(self) -> bool:
        return self.object_presence >= FOLLOWS


def measure(frames: np.ndarray, prompt: str, fps: float = 10.0) -> Following:
    """How well ``frames`` (N, H, W, 3) uint8 follow ``prompt``."""
    colour = COLOURS[scene_for_caption(prompt, np.random.default_rng(0)).colour]
    shows = [largest_blob(frame, colour) >= object_share() for frame in frames]
    return Following(prompt, object_motion(frames, prompt, fps).presence, float(np.mean(shows)))


def run(prompts: list[str], out: str | None = None, base_model: str | None = None) -> list[Following]:
    from evaluation.preview import video_preview_png
    from infra.video_io import to_uint8
    from models.request import GenerationRequest
    from stages.extend import generate_low_res
    from stages.generate import Stages
    from stages.sources import ModelSources

    stages = Stages.load(ModelSources(preset="tiny", base_model=base_model), refine=False)
    rows = []
    for i, prompt in enumerate(prompts):
        request = GenerationRequest(prompt, num_frames=NUM_FRAMES, refine=False)
        frames = to_uint8(generate_low_res(request, stages.init, stages.extend))
        rows.append(measure(frames, prompt, request.fps))
        if out is not None:
            from pathlib import Path

            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, f"{i:02d}.png").write_bytes(video_preview_png(frames, title=prompt))
    return rows


def markdown(rows: list[Following]) -> str:
    lines = ["| prompt | colour present (share of frames) | object of the colour (share of frames) | follows |",
             "|---|---|---|---|"]
    lines += [f"| {r.prompt} | {r.presence:.2f} | {r.object_presence:.2f} | {'yes' if r.follows else 'no'} |"
              for r in rows]
    lines.append(f"\n{sum(r.follows for r in rows)} of {len(rows)} prompts follow (an object of the colour in at "
                 f"least {FOLLOWS:.0%} of {NUM_FRAMES} frames; the colour alone in {FOLLOWS:.0%}: "
                 f"{sum(r.presence >= FOLLOWS for r in rows)}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.prompt_following", description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=("random", "held-out"), default="random")
    p.add_argument("--seed", type=int, default=0, help="the random set's seed")
    p.add_argument("--out", default=None, help="write each video's frames as DIR/NN.png")
    p.add_argument("--base-model", default=None, help="a base model directory to measure instead of the shipped one")
    args = p.parse_args(argv)
    prompts = random_prompts(args.seed) if args.set == "random" else list(HELD_OUT_PROMPTS)
    print(markdown(run(prompts, args.out, args.base_model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
