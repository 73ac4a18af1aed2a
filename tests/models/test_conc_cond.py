"""Conc-Cond baseline (App. D.1): zero-initialised input channels leave the base model unchanged."""

from __future__ import annotations

import torch

from models.conc_cond import ConcCondUNet


@torch.no_grad()
def test_conc_cond_at_init_equals_the_base_unet(tiny_video_ldm):
    model = ConcCondUNet.from_base(tiny_video_ldm.unet, cond_frames=8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, 16, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    cond = torch.randn(1, 4, 8, 16, 16, generator=g)
    expected = tiny_video_ldm.unet(x, 500, text).sample
    torch.testing.assert_close(model(x, 500, text, cond_frames=cond), expected, rtol=0, atol=1e-6)


def test_condition_input_is_latents_then_mask():
    x = torch.zeros(1, 4, 16, 2, 2)
    cond = torch.ones(1, 4, 8, 2, 2)
    model = ConcCondUNet(unet_config=dict(in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                          down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                          up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                                          norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
                                          layers_per_block=1))
    inp = model.condition_input(x, cond)
    assert inp.shape == (1, 9, 16, 2, 2)
    assert inp[:, 4:8, :8].eq(1).all() and inp[:, 4:8, 8:].eq(0).all()
    assert inp[:, 8, :8].eq(1).all() and inp[:, 8, 8:].eq(0).all()
