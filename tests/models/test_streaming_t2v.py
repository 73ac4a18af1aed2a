"""StreamingT2V.sample_chunk's condition replacement (beyond the paper; Ho et al. 2022, Sec. 3.1)."""

from __future__ import annotations

import pytest
import torch

from models.errors import ConfigError
from models.seeding import randn, stream
from models.streaming_t2v import ConditionReplacement


def _unet_inputs(model, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x_t of the first guidance branch, t) of every UNet call of one sampled chunk."""
    calls = []
    hook = model.unet.register_forward_pre_hook(lambda m, args: calls.append((args[0][:1].clone(), args[1])))
    try:
        g = torch.Generator().manual_seed(0)
        cond = torch.rand(1, 3, model.cond_frames, model.video.height, model.video.width, generator=g) * 2 - 1
        model.sample_chunk(["a red circle moving left on a striped background"], cond[:, :, 0], cond,
                           [stream(0, "extend", 1)], num_inference_steps=3, **kwargs)
    finally:
        hook.remove()
    return calls


@torch.no_grad()
def test_replacement_pins_the_recovering_frames_to_the_noised_condition_at_every_step(tiny_streaming):
    model = tiny_streaming
    k = model.cond_frames
    z = torch.randn(1, 4, k, model.video.height // model.vae_scale, model.video.width // model.vae_scale,
                    generator=torch.Generator().manual_seed(1))
    plain = _unet_inputs(model)
    pinned = _unet_inputs(model, replacement=ConditionReplacement(z, [stream(0, "extend-replacement", 1)]))
    eps = randn(tuple(z.shape), stream(0, "extend-replacement", 1), "cpu", torch.float32)
    scheduler = model.schedule.make_scheduler()
    assert len(pinned) == len(plain) == 3
    for x, t in pinned:
        torch.testing.assert_close(x[:, :, :k], scheduler.add_noise(z, eps, t.reshape(1)), rtol=0, atol=1e-6)
    # The replacement draws from its own stream: the chunk's own starting noise is unchanged.
    assert torch.equal(pinned[0][0][:, :, k:], plain[0][0][:, :, k:])
    assert not torch.equal(pinned[0][0][:, :, :k], plain[0][0][:, :, :k])


def test_replacement_needs_one_generator_per_video(tiny_streaming):
    m = tiny_streaming
    z = torch.zeros(1, 4, m.cond_frames, m.video.height // m.vae_scale, m.video.width // m.vae_scale)
    with pytest.raises(ConfigError) as err:
        _unet_inputs(tiny_streaming, replacement=ConditionReplacement(z, []))
    assert err.value.field == "replacement.generators"


def test_replacement_latents_must_match_the_chunk(tiny_streaming):
    z = torch.zeros(1, 4, tiny_streaming.cond_frames, 3, 3)  # not the chunk's latent size
    with pytest.raises(ConfigError) as err:
        _unet_inputs(tiny_streaming, replacement=ConditionReplacement(z, [stream(0, "extend-replacement", 1)]))
    assert err.value.field == "replacement.latents"
