"""Frame strips: evenly spaced frames, every row at the largest size, the low-res pixels kept."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation.preview import GAP, HEADER, LABEL_WIDTH, frame_indices, strip_png
from models.errors import ConfigError


def test_frame_indices_run_from_the_first_frame_to_the_last():
    assert frame_indices(80, 6) == [0, 16, 32, 47, 63, 79]
    assert frame_indices(3, 6) == [0, 1, 2]
    assert frame_indices(10, 1) == [0]


def test_a_strip_shows_each_chosen_frame_of_each_row_at_the_largest_size():
    low = np.zeros((5, 4, 4, 3), np.uint8)
    low[:, :, :, 1] = np.arange(5)[:, None, None] * 50  # frame i: green 50 i
    low[:, 0, 0] = (255, 0, 0)  # one red low-res pixel, shown as an 8x8 block of the 32x32 cell
    high = np.full((5, 32, 32, 3), 7, np.uint8)
    image = np.asarray(Image.open(io.BytesIO(strip_png([("low res", low), ("refined", high)], count=3))))
    assert image.shape == (HEADER + 2 * (32 + GAP), LABEL_WIDTH + 3 * (32 + GAP), 3)
    for column, index in enumerate([0, 2, 4]):
        x = LABEL_WIDTH + column * (32 + GAP)
        cell = image[HEADER:HEADER + 32, x:x + 32]
        assert (cell[:8, :8] == (255, 0, 0)).all() and (cell[8:, 8:, 1] == 50 * index).all()
        assert (image[HEADER + 32 + GAP:HEADER + 64 + GAP, x:x + 32] == 7).all()


def test_bad_frames_are_refused_by_name():
    with pytest.raises(ConfigError, match="frames"):
        strip_png([("video", np.zeros((2, 4, 4), np.uint8))])
    with pytest.raises(ConfigError, match="count"):
        strip_png([("video", np.zeros((2, 4, 4, 3), np.uint8))], count=0)
