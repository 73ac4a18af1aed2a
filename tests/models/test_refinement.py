"""Shared noise (Eq. 7) and randomized blending (Eq. 8)."""

from __future__ import annotations

import pytest
import torch

from models.refinement import (ChunkRefiner, RefineConfig, blend_cut, from_canvas, randomized_blend,
                               shared_noise, to_canvas)
from models.schedule import VIDEO_LDM_SCHEDULE


def _refiner(n=57, blend="randomized", seed=0):
    return ChunkRefiner(n, (4, 6, 5), VIDEO_LDM_SCHEDULE, RefineConfig(blend=blend), seed)


@pytest.mark.parametrize("tag", ["refine/sdedit", "refine/ddim/3"])
def test_overlapping_frames_of_consecutive_chunks_get_identical_noise(tag):
    r = _refiner()
    for o in r.plan.overlaps:
        left = r.noise(r.chunks[o.left], tag)[:, :, -o.frames:]
        right = r.noise(r.chunks[o.right], tag)[:, :, :o.frames]
        assert torch.equal(left, right)
        # ... and the new frames of the right chunk are fresh draws.
        fresh = r.noise(r.chunks[o.right], tag)[:, :, o.frames:]
        assert not any(torch.equal(fresh[:, :, i], left[:, :, j]) for i in range(fresh.shape[2])
                       for j in range(o.frames))


def test_shared_noise_is_eq7_concatenation():
    eps1 = shared_noise(3, "x", range(0, 24), (2, 3, 3))
    eps2 = shared_noise(3, "x", range(16, 40), (2, 3, 3))
    fresh = shared_noise(3, "x", range(24, 40), (2, 3, 3))
    assert torch.equal(eps2, torch.cat([eps1[:, :, -8:], fresh], dim=2))


def test_independent_chunks_do_not_share_noise():
    r = _refiner(blend="independent")
    o = r.plan.overlaps[0]
    assert not torch.equal(r.noise(r.chunks[0], "refine/sdedit")[:, :, -o.frames:],
                           r.noise(r.chunks[1], "refine/sdedit")[:, :, :o.frames])


def test_randomized_blending_picks_left_frame_f_with_probability_1_minus_f_over_o_plus_1():
    r = _refiner(n=200)
    o = r.plan.overlaps[0]
    draws = torch.tensor([blend_cut(seed, step, ov) for seed in range(40) for step in range(30)
                          for ov in r.plan.overlaps])
    assert draws.min() == 0 and draws.max() == o.frames
    n = len(draws)
    for f in range(1, o.frames + 1):  # overlap frame f (1-based) comes from the left chunk iff f <= f_thr
        empirical = (draws >= f).float().mean().item()
        expected = 1 - f / (o.frames + 1)
        assert abs(empirical - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 1e-3, (f, empirical)


def test_blended_chunks_agree_on_their_overlap_and_take_each_side():
    r = _refiner(n=40)
    g = torch.Generator().manual_seed(0)
    stepped = [torch.randn(1, 4, c.frames, 6, 5, generator=g) for c in r.chunks]
    left, right = r.blended(0, 7, stepped.__getitem__), r.blended(1, 7, stepped.__getitem__)
    o = r.plan.overlaps[0]
    cut = blend_cut(0, 7, o)
    assert torch.equal(left[:, :, -o.frames:], right[:, :, :o.frames])
    merged = randomized_blend(stepped[0][:, :, -o.frames:], stepped[1][:, :, :o.frames], cut)
    assert torch.equal(right[:, :, :o.frames], merged)
    assert torch.equal(left[:, :, :-o.frames], stepped[0][:, :, :-o.frames])  # outside the overlap: own frames


def test_sdedit_starts_at_t_prime_600():
    r = _refiner()
    assert r.timesteps[0] == 600 and r.timesteps[-1] == 20 and len(r.timesteps) == 30


def test_canvas_upscales_pads_black_and_crops_back():
    config = RefineConfig(target_height=80, target_width=80, canvas_height=80, canvas_width=112)
    frames = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    canvas = to_canvas(frames, config)
    assert canvas.shape == (1, 3, 5, 80, 112)
    assert torch.all(canvas[..., :16] == -1) and torch.all(canvas[..., -16:] == -1)
    assert from_canvas(canvas, config).shape == (1, 3, 5, 80, 80)


@pytest.mark.parametrize("kwargs,match", [
    ({"blend": "mix"}, r"blend='mix': must be one of \['randomized', 'shared-noise', 'independent'\]"),
    ({"target_width": 2000}, r"target_width=2000: must be in \[1, canvas_width=1280\]"),
    ({"noise_level": 0}, r"noise_level=0: must be an integer in \[1, 1000\]"),
])
def test_refine_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefineConfig(**kwargs)
