"""APM (Sec. 4.2, Eq. 6): alpha_l = 0 leaves the base model unchanged; token shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from models.apm import APMAttnProcessor, APMConfig, TokenMixer
from models.presets import TINY, reference_variant
from models.streaming_t2v import StreamingT2V


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = model.unet.unet.config.cross_attention_dim
    x = torch.randn(2, 4, 16, 16, 16, generator=g)
    text = torch.randn(2, 77, d, generator=g)
    image = torch.randn(2, model.unet.apm.config.image_embed_dim, generator=g)
    return x, text, image


@pytest.fixture(scope="module")
def tiny_reference_layout():
    return StreamingT2V.from_preset(reference_variant(TINY), seed=0)


@torch.no_grad()
@pytest.mark.parametrize("layout", ["paper", "reference"])
def test_apm_at_init_leaves_base_prediction_unchanged(tiny_streaming, tiny_reference_layout, layout):
    model = tiny_streaming if layout == "paper" else tiny_reference_layout
    x, text, image = _inputs(model)
    expected = model.unet.unet(x, 321, text).sample  # plain diffusers UNet3D, text only
    got = model.unet(x, 321, text, image_embeds=image)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("layout", ["paper", "reference"])
def test_apm_changes_prediction_once_alpha_is_nonzero(tiny_streaming, tiny_reference_layout, layout):
    model = copy.deepcopy((tiny_streaming if layout == "paper" else tiny_reference_layout).unet)
    x, text, image = _inputs(tiny_streaming)
    before = model(x, 321, text, image_embeds=image)
    processors = [p for p in model.unet.attn_processors.values() if isinstance(p, APMAttnProcessor)]
    assert len(processors) == len(model.apm_layers) == 4
    for p in processors:
        p.alpha.data.fill_(1.0)
    after = model(x, 321, text, image_embeds=image)
    assert (after - before).abs().max() > 1e-4
    # The anchor now matters, and each layer's alpha scales SiLU(alpha) * x_mixed (Eq. 6).
    other = model(x, 321, text, image_embeds=-image)
    assert (other - after).abs().max() > 1e-5


def test_eq6_context_is_silu_alpha_times_mixed_plus_text():
    config = APMConfig(image_embed_dim=8, hidden_dim=12, num_image_tokens=16, token_dim=6, num_text_tokens=77)
    processor = APMAttnProcessor(config)
    processor.alpha.data.fill_(0.7)
    text, mixed = torch.randn(3, 77, 6), torch.randn(3, 77, 6)
    got = processor.cross_context(torch.cat([text, mixed], dim=1))
    torch.testing.assert_close(got, torch.nn.functional.silu(torch.tensor(0.7)) * mixed + text)
    assert torch.equal(processor.cross_context(text), text)  # no anchor: plain cross-attention


def test_token_mixer_maps_93_tokens_to_77_and_resampler_makes_16():
    from models.apm import ImageTokenResampler
    from models.presets import MODELSCOPE

    with torch.device("meta"):
        tokens = ImageTokenResampler(MODELSCOPE.apm)(torch.empty(2, 1024))
        mixed = TokenMixer(MODELSCOPE.apm)(torch.empty(2, 77, 1024), tokens)
    assert tokens.shape == (2, 16, 1024)
    assert mixed.shape == (2, 77, 1024)
    assert ImageTokenResampler(MODELSCOPE.apm).mlp[0].out_features == 1280


def test_apm_only_on_spatial_cross_attention_of_the_main_branch(tiny_streaming):
    unet = tiny_streaming.unet
    names = unet.apm_layers
    assert names and all(".attentions." in n and n.endswith("attn2.processor") for n in names)
    control = [m for m in unet.cam.control.modules() if isinstance(m, APMAttnProcessor)]
    assert control == []


@pytest.mark.parametrize("layout", ["paper", "reference"])
def test_apm_parameters_are_the_resampler_mixers_and_every_gate(tiny_streaming, tiny_reference_layout, layout):
    """StreamingT2VUNet.apm_parameters: exactly APM's own weights (shared or per-layer mixers),
    one alpha_l per APM layer, nothing of the UNet or CAM."""
    unet = (tiny_streaming if layout == "paper" else tiny_reference_layout).unet
    params = {id(p) for p in unet.apm_parameters()}
    names = {n for n, p in unet.named_parameters() if id(p) in params}
    assert len(names) == len(params)
    assert sum(n.endswith(".alpha") for n in names) == len(unet.apm_layers)
    gates = unet.apm_gates()  # one alpha_l per APM layer, each among APM's parameters
    assert len(gates) == len(unet.apm_layers) and all(id(g) in params for g in gates)
    assert {n for n, p in unet.named_parameters() if any(p is g for g in gates)} == {
        n for n in names if n.endswith(".alpha")}
    assert all(n.startswith("apm.") or ".processor." in n for n in names)
    assert {n for n, _ in unet.named_parameters() if n.startswith("apm.") or n.endswith(".alpha")} <= names


def test_apm_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"apm\.token_mixing='both': must be one of 'shared', 'per_layer'"):
        APMConfig(token_mixing="both")
    with pytest.raises(ValueError, match=r"apm\.mixer_kernel_size=2: must be an odd integer"):
        APMConfig(mixer_kernel_size=2)
