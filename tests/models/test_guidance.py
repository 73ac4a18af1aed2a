"""Multi-conditioned classifier-free guidance (Eq. 13)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from models.apm import APMAttnProcessor
from models.guidance import GuidanceWeights, multi_conditioned_cfg


@pytest.fixture(scope="module")
def trained_like(tiny_streaming):
    """A copy whose zero-initialised parts are perturbed, so all three branches differ."""
    model = copy.copy(tiny_streaming)
    model.unet = copy.deepcopy(tiny_streaming.unet)
    torch.manual_seed(7)
    for merger in model.unet.cam.mergers:
        torch.nn.init.normal_(merger.proj_out.weight, std=0.05)
    torch.nn.init.normal_(model.unet.cam.control.frame_encoder.conv_out.weight, std=0.05)
    for p in model.unet.unet.attn_processors.values():
        if isinstance(p, APMAttnProcessor):
            p.alpha.data.fill_(0.5)
    return model


def _branches(model):
    g = torch.Generator().manual_seed(3)
    d = model.unet.unet.config.cross_attention_dim
    e = model.unet.apm.config.image_embed_dim
    x = torch.randn(1, 4, 16, 16, 16, generator=g)
    text_null, text = torch.randn(1, 77, d, generator=g), torch.randn(1, 77, d, generator=g)
    anchor_null, anchor = torch.randn(1, e, generator=g), torch.randn(1, e, generator=g)
    cond = torch.rand(1, 3, 8, 64, 64, generator=g) * 2 - 1
    return x, text_null, text, anchor_null, anchor, cond


@torch.no_grad()
@pytest.mark.parametrize("weights", [GuidanceWeights(7.5, 2.0), GuidanceWeights(7.5, 7.5), GuidanceWeights(0, 3)])
def test_batched_guidance_equals_three_separate_unet_calls(trained_like, weights):
    x, text_null, text, anchor_null, anchor, cond = _branches(trained_like)
    t = torch.tensor(601)
    unet = trained_like.unet
    eps_null = unet(x, t, text_null, anchor_null, cond)
    eps_text = unet(x, t, text, anchor_null, cond)
    eps_full = unet(x, t, text, anchor, cond)
    assert (eps_text - eps_null).abs().max() > 1e-4 and (eps_full - eps_text).abs().max() > 1e-4
    expected = eps_null + weights.text * (eps_text - eps_null) + weights.anchor * (eps_full - eps_text)
    got = trained_like.guided_noise(x, t, text_null, text, anchor_null, anchor, cond, weights)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(multi_conditioned_cfg(eps_null, eps_text, eps_full, weights), expected)


def test_equal_weights_let_the_anchor_free_branch_cancel():
    assert GuidanceWeights(7.5, 7.5).anchor_branch_cancels
    assert not GuidanceWeights(7.5, 5.0).anchor_branch_cancels


@pytest.mark.parametrize("field,value", [("text", -1.0), ("anchor", math.nan), ("anchor", math.inf),
                                         ("text", "7.5")])
def test_bad_guidance_weights_name_the_field(field, value):
    kwargs = {field: value}
    with pytest.raises(ValueError, match=rf"guidance\.{field}=.*: must be a finite number >= 0"):
        GuidanceWeights(**kwargs)
