"""Refinement fidelity: PSNR at the low-res size and the Laplacian-variance sharpness."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluation.fidelity import fidelity, psnr, resize_frames, sharpness
from models.errors import ConfigError


def _video(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)


def test_a_perfect_upscale_keeps_the_low_res_video_exactly():
    low = _video(16)
    nearest = resize_frames(low, 32, 32, cv2.INTER_NEAREST)  # each pixel a 2x2 block: area reduces it back
    assert fidelity(low, nearest).psnr_to_low_res == float("inf")


def test_psnr_falls_with_the_error():
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * np.log10(255 ** 2), abs=1e-9)
    assert psnr(a, a + 10) == pytest.approx(10 * np.log10(255 ** 2 / 100), abs=1e-9)


def test_sharp_frames_score_higher_than_blurred_ones():
    frames = _video(64)
    blurred = np.stack([cv2.GaussianBlur(f, (7, 7), 2.0) for f in frames])
    assert sharpness(frames) > 10 * sharpness(blurred)
    f = fidelity(resize_frames(frames, 32, 32, cv2.INTER_AREA), frames)
    assert f.sharpness_refined > f.sharpness_bicubic  # the original beats an upscale of its reduction


def test_frame_counts_must_match():
    with pytest.raises(ConfigError, match="refined"):
        fidelity(_video(8), _video(16)[:3])
