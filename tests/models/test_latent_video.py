"""The VAE runs a bounded number of pixels per call, and pieces give the same bits as one call."""

from __future__ import annotations

import numpy as np
import torch

import models.latent_video as latent_video
from models.latent_video import vae_frames_per_batch


def test_frames_per_vae_call_follow_the_pixel_budget():
    assert vae_frames_per_batch(256, 256) == 16   # ModelScope's low-res frames: 16 per call
    assert vae_frames_per_batch(64, 64) == 16     # never more than 16
    assert vae_frames_per_batch(360, 640) == 4
    assert vae_frames_per_batch(720, 1280) == 1   # the paper's refine canvas: one frame per call
    assert vae_frames_per_batch(2160, 3840) == 1  # never fewer than one


def _calls(vae, method):
    sizes = []
    original = getattr(vae, method)

    def counted(x, *args, **kwargs):
        sizes.append(x.shape[0])
        return original(x, *args, **kwargs)
    return sizes, counted


def test_vae_calls_stay_within_the_budget_and_match_one_frame_calls(tiny_video_ldm, monkeypatch):
    """With a budget of 3 frames of this size, a 7-frame video is decoded in calls of 3, 3 and 1
    frames, and each frame is what it is when decoded with the same neighbours alone."""
    model = tiny_video_ldm
    h, w = model.video.height, model.video.width
    monkeypatch.setattr(latent_video, "VAE_PIXELS_PER_BATCH", 3 * h * w)
    latents = torch.randn(model.latent_shape(1, 7), generator=torch.Generator().manual_seed(0))
    sizes, counted = _calls(model.vae, "decode")
    monkeypatch.setattr(model.vae, "decode", counted)
    frames = model.decode(latents)
    assert sizes == [3, 3, 1] and frames.shape == (1, 3, 7, h, w)
    assert torch.equal(frames[:, :, 3:6], model.decode(latents[:, :, 3:6]))
    sizes, counted = _calls(model.vae, "encode")
    monkeypatch.setattr(model.vae, "encode", counted)
    encoded = model.encode(frames)
    assert sizes == [3, 3, 1] and encoded.shape == latents.shape and np.all(np.isfinite(encoded.numpy()))


def test_refine_stage_encodes_and_decodes_the_canvas_in_budgeted_calls(tiny_stages, monkeypatch):
    """The refine stage feeds the canvas to the VAE in calls within the budget, and its piecewise
    encode equals encoding the whole canvas video through the model's own split."""
    from infra.video_io import from_uint8
    from models.refinement import to_canvas
    from models.request import GenerationRequest

    stage = tiny_stages.refine
    request = GenerationRequest("a red circle moving left on a striped background", num_frames=16, seed=0)
    config = stage.config_for(request)
    monkeypatch.setattr(latent_video, "VAE_PIXELS_PER_BATCH", 4 * config.canvas_height * config.canvas_width)
    low_res = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    sizes, counted = _calls(stage.model.vae, "encode")
    monkeypatch.setattr(stage.model.vae, "encode", counted)
    clean = stage.encode(request, low_res)
    assert sizes == [4, 4, 2]
    whole = stage.model.encode(to_canvas(from_uint8(low_res).to(stage.model.dtype), config))
    assert torch.equal(clean, whole)
    sizes, counted = _calls(stage.model.vae, "decode")
    monkeypatch.setattr(stage.model.vae, "decode", counted)
    frames = stage.decode(request, clean)
    assert sizes == [4, 4, 2] and frames.shape == (10, config.target_height, config.target_width, 3)
