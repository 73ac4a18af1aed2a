"""MS-Vid2Vid-XL's denoiser (ModelScope ``Vid2VidSDUNet``) as a diffusers UNet3D.

Layer by layer, ``Vid2VidSDUNet`` (with ``USE_TEMPORAL_TRANSFORMER = True``) is the ModelScope
text-to-video UNet that diffusers' ``UNet3DConditionModel`` implements: the sinusoidal time
embedding [cos, sin] and its two-layer MLP, conv_in followed by a temporal transformer of 8 heads,
ResBlock + TemporalConvBlock_v2 (= ResnetBlock2D + TemporalConvLayer), SpatialTransformer with
linear projections (= Transformer2DModel), TemporalTransformer, whose 1x1 Conv1d projections are
linear maps (= TransformerTemporalModel), C / head_dim heads of head_dim channels, and the same
skip connections. Only its resampling geometry differs, which is what lets it run at 720 px
(latent height 90, not a multiple of 8):

* downsampling: 3x3 stride-2 convolution padded by 2 rows and 1 column (``downsample_padding
  = (2, 1)``): h rows become h / 2 + 1;
* upsampling: nearest x2, then the first and the last row are dropped, before the 3x3 conv.

A latent of 90 x 160 runs 90 -> 46 -> 24 -> 13 rows down and 13 -> 24 -> 46 -> 90 up. The
skips line up when height and width are even at every level that downsamples
(:func:`latent_size_fits`). :class:`Vid2VidUNet` is ``UNet3DConditionModel`` with these two
layers; its parameters, their names and its config are UNet3DConditionModel's.
"""

from __future__ import annotations

from functools import wraps

import torch
import torch.nn.functional as F
from diffusers import UNet3DConditionModel
from diffusers.models.upsampling import Upsample2D

from models.errors import require

DOWNSAMPLE_PADDING = (2, 1)


class CroppedUpsample2D(Upsample2D):
    """ModelScope's ``Upsample(dims=2)``: nearest x2, first and last rows dropped, 3x3 conv (the
    crop gives the skip connection's size, so diffusers' ``output_size`` is not needed)."""

    def forward(self, hidden_states: torch.Tensor, output_size: int | None = None, *args, **kwargs) -> torch.Tensor:
        x = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")[..., 1:-1, :]
        return self.conv(x)


def latent_size_fits(height: int, width: int, downsamplers: int) -> bool:
    """Whether a latent of ``height`` x ``width`` comes back to its size through the UNet."""
    for _ in range(downsamplers):
        if height % 2 or width % 2:
            return False
        height, width = height // 2 + 1, width // 2
    return True


class Vid2VidUNet(UNet3DConditionModel):
    """``UNet3DConditionModel`` with MS-Vid2Vid-XL's resampling (module docstring)."""

    @wraps(UNet3DConditionModel.__init__)  # the same config signature, so from_config/from_pretrained work
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        require(tuple(self.config.downsample_padding) == DOWNSAMPLE_PADDING, "downsample_padding",
                self.config.downsample_padding, f"{DOWNSAMPLE_PADDING} (MS-Vid2Vid-XL's stride-2 convolution)")
        for block in self.up_blocks:
            if block.upsamplers is not None:
                channels = block.upsamplers[0].channels
                block.upsamplers[0] = CroppedUpsample2D(channels, use_conv=True, out_channels=channels)

    def forward(self, sample: torch.Tensor, *args, **kwargs):
        h, w = sample.shape[-2:]
        require(latent_size_fits(h, w, self.num_upsamplers), "latent size", (h, w),
                f"even height and width at each of the {self.num_upsamplers} downsampling levels "
                "(720x1280 px gives 90x160)")
        return super().forward(sample, *args, **kwargs)
