"""Object tracking on rendered toy clips, whose truth is known: presence, speed along the
captioned direction (also across the wrap-around) and the direction of each window's motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.errors import ConfigError
from toyworld.scenes import COLOURS, Scene, render
from toyworld.tracking import COLOUR_TOLERANCE, centroid, colour_distance, largest_blob, object_motion, torus_distance

FPS = 10.0


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_a_rendered_clip_moves_at_its_speed_the_captioned_way(direction):
    scene = Scene("square", "blue", direction, "striped", speed=0.2, start=(0.9, 0.1))
    frames = render(scene, 64, FPS, 64)  # 1.28 px per frame: it wraps around within the clip
    motion = object_motion(frames, scene.caption, FPS)
    assert motion.presence == 1.0
    assert motion.speed_along == pytest.approx(0.2, abs=0.01)
    assert motion.along_fraction == 1.0
    backwards = object_motion(frames[::-1], scene.caption, FPS)
    assert backwards.speed_along == pytest.approx(-0.2, abs=0.01) and backwards.along_fraction == 0.0


def test_a_standing_object_and_a_missing_one():
    scene = Scene("circle", "red", "left", "dotted")
    still = np.repeat(render(scene, 1, FPS, 64), 32, axis=0)
    motion = object_motion(still, scene.caption, FPS)
    assert motion.presence == 1.0 and motion.speed_along == 0.0 and motion.along_fraction == 0.0
    other = Scene("circle", "green", "left", "dotted")  # a clip without the captioned (red) object
    missing = object_motion(render(other, 32, FPS, 64), scene.caption, FPS)
    assert missing.presence == 0.0 and math.isnan(missing.speed_along) and math.isnan(missing.along_fraction)


def test_centroid_is_a_circular_mean():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[4:6, [0, 1, 14, 15]] = (220, 40, 40)  # an object straddling the left/right edge
    assert torus_distance(centroid(frame, (220, 40, 40)), np.array([0.0, 5.0]), (16, 16)) < 1e-6
    assert centroid(np.zeros((16, 16, 3), np.uint8), (220, 40, 40)) is None


def test_bad_input_names_the_field():
    frames = render(Scene("circle", "red", "left", "dotted"), 4, FPS, 32)
    for kwargs, field in (({"frames": frames[0]}, "frames"), ({"fps": 0.0}, "fps"),
                          ({"caption": "a red circle"}, "caption")):
        args = {"frames": frames, "caption": "a red circle moving left on a dotted background", "fps": FPS, **kwargs}
        with pytest.raises(ConfigError) as err:
            object_motion(**args)
        assert err.value.field == field


def test_an_object_across_the_wrapping_edges_is_one_region():
    centred = render(Scene("square", "red", "left", "striped", size=0.15), 1)[0]
    corner = np.roll(centred, (32, 32), axis=(0, 1))  # the square split over the four corners
    area = largest_blob(centred, COLOURS["red"])
    red_pixels = (colour_distance(centred, COLOURS["red"]) < COLOUR_TOLERANCE).sum()
    assert largest_blob(corner, COLOURS["red"]) == area == red_pixels / 64**2 and red_pixels > 200
    assert largest_blob(centred, COLOURS["blue"]) == 0.0
