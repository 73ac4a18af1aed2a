"""Presets: the real ModelScope sizes on the meta device, the tiny preset's speed budget is a benchmark."""

from __future__ import annotations

import pytest
import torch

from models.errors import ConfigError
from models.presets import PRESETS, get_preset
from models.streaming_t2v import StreamingT2V

# The published ModelScope text-to-video UNet (ali-vilab/text-to-video-ms-1.7b,
# unet/diffusion_pytorch_model.fp16.safetensors: 2.82 GB at 2 bytes a parameter) has 1.41 B
# parameters; the model card's "about 1.7 billion" is that UNet plus the 0.34 B text encoder.
PUBLISHED_MODELSCOPE_UNET_PARAMS = 1.41e9


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def modelscope_meta():
    return StreamingT2V.from_preset("modelscope", device="meta")


def test_modelscope_unet_matches_published_size(modelscope_meta):
    base = _count(modelscope_meta.unet.unet) - sum(
        p.numel() for n, p in modelscope_meta.unet.unet.named_parameters() if ".processor." in n)
    cam = _count(modelscope_meta.unet.cam)
    apm = _count(modelscope_meta.unet.apm) + (_count(modelscope_meta.unet.unet) - base)
    text = _count(modelscope_meta.text_encoder)
    print(f"\nmodelscope: base UNet {base:,} | CAM {cam:,} | APM {apm:,} | text encoder {text:,} | "
          f"image encoder {_count(modelscope_meta.image_encoder):,} | VAE {_count(modelscope_meta.vae):,}")
    assert abs(base - PUBLISHED_MODELSCOPE_UNET_PARAMS) / PUBLISHED_MODELSCOPE_UNET_PARAMS < 0.02
    assert abs(base + text - 1.7e9) / 1.7e9 < 0.05
    # APM: MLP 1024 -> 1280 -> 16 x 1024, one Conv1d 93 -> 77 (kernel 3), one alpha per layer.
    assert apm == (1024 * 1280 + 1280) + (1280 * 16 * 1024 + 16 * 1024) + (93 * 77 * 3 + 77) + 16
    assert cam > 0.4 * base  # the control branch copies the whole encoder and mid block


def test_modelscope_shapes_on_meta(modelscope_meta):
    unet = modelscope_meta.unet
    x = torch.empty(3, 4, 16, 32, 32, device="meta")
    out = unet(x, torch.tensor(999), torch.empty(3, 77, 1024, device="meta"), torch.empty(3, 1024, device="meta"),
               torch.empty(3, 3, 8, 256, 256, device="meta"))
    assert out.shape == x.shape
    assert len(unet.apm_layers) == 16 and len(unet.cam.mergers) == 13
    assert modelscope_meta.latent_shape(1, 16) == (1, 4, 16, 32, 32)


def test_unknown_preset_names_the_allowed_values():
    with pytest.raises(ConfigError, match=r"preset='huge': must be one of \['modelscope', 'tiny'\]"):
        get_preset("huge")
    assert set(PRESETS) == {"tiny", "modelscope"}
