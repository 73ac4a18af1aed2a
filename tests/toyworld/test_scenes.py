"""The toy world: captions match what is drawn, motion is continuous, held-out prompts are held out."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ConfigError
from toyworld.dataset import HELD_OUT_KEYS, HELD_OUT_PROMPTS, toy_clip
from toyworld.scenes import COLOURS, Scene, render, scene_for_caption


def _centroid(frames: np.ndarray, colour: str) -> np.ndarray:
    target = np.asarray(COLOURS[colour])
    mask = np.abs(frames.astype(int) - target).sum(-1) < 30
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("direction,sign", [("left", (-1, 0)), ("right", (1, 0)), ("up", (0, -1)), ("down", (0, 1))])
def test_the_object_moves_as_captioned(direction, sign):
    scene = Scene("circle", "red", direction, "striped", speed=0.2, start=(0.5, 0.5))
    frames = render(scene, 11, fps=10, size=64)
    moved = _centroid(frames[-1], "red") - _centroid(frames[0], "red")
    assert np.allclose(moved, 0.2 * 64 * np.asarray(sign), atol=0.5)  # 1 s at 0.2 widths/s
    assert "a red circle moving " + direction in scene.caption


def test_motion_is_continuous_and_wraps_around():
    scene = Scene("square", "blue", "left", "checkered", speed=0.25, spinning=True)
    frames = render(scene, 240, fps=10, size=64).astype(np.float64)
    step = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert step.max() < 4 * np.median(step) + 1  # no frame-to-frame jump: no cut, also at the wrap
    blue = np.abs(frames - np.asarray(COLOURS["blue"])).sum(-1) < 30
    assert blue.sum(axis=(1, 2)).min() > 0.5 * blue.sum(axis=(1, 2)).max()  # never lost off-screen


def test_clips_are_a_pure_function_of_seed_and_index():
    a, cap_a = toy_clip(3, 17, 16, 10, 64)
    b, cap_b = toy_clip(3, 17, 16, 10, 64)
    c, _ = toy_clip(3, 18, 16, 10, 64)
    assert cap_a == cap_b and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8


def test_held_out_prompts_never_appear_in_training_clips():
    seen = {toy_clip(0, i, 1, 10, 16)[1] for i in range(3000)}
    assert not seen & set(HELD_OUT_PROMPTS)
    assert len(HELD_OUT_KEYS) == len(HELD_OUT_PROMPTS) == 8


def test_a_caption_can_be_rendered_back():
    rng = np.random.default_rng(0)
    for prompt in HELD_OUT_PROMPTS:
        assert scene_for_caption(prompt, rng).caption == prompt


def test_bad_scene_names_the_field():
    with pytest.raises(ConfigError, match="colour"):
        Scene("circle", "mauve", "left", "striped")
    with pytest.raises(ConfigError, match="spinning"):
        Scene("circle", "red", "left", "striped", spinning=True)
