"""Conc-Cond, the baseline CAM is compared with (paper Sec. 5.4, App. D.1).

The conditional frames and a mask are concatenated to the UNet input: the latents of the first
``F_cond`` frames of the chunk are given (mask 1), the other frames' condition slots are zero
(mask 0). The Video-LDM UNet's ``conv_in`` is widened from c to 2c + 1 input channels, the new
input weights start at zero, so at initialisation the model is the base Video-LDM, and the whole
UNet is fine-tuned. Unlike CAM it needs zero-padded frames and a mask, which the paper argues
cause the inconsistencies (scene cuts) that CAM avoids.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet3DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from models.errors import require


class ConcCondUNet(ModelMixin, ConfigMixin):
    """A UNet3D whose input is [noisy latents, condition latents, mask] along channels."""

    config_name = "config.json"
    _supports_gradient_checkpointing = True
    #: StreamingT2V hands this model VAE latents of the conditioning frames, not pixels.
    conditions_on_latents = True

    @register_to_config
    def __init__(self, unet_config: dict[str, Any], cond_frames: int = 8) -> None:
        super().__init__()
        require(cond_frames >= 1, "cond_frames", cond_frames, "an integer >= 1")
        config = {k: v for k, v in unet_config.items() if not k.startswith("_")}
        self.latent_channels = config["out_channels"]
        self.unet = UNet3DConditionModel(**{**config, "in_channels": 2 * self.latent_channels + 1})

    @classmethod
    def from_base(cls, base: UNet3DConditionModel, cond_frames: int = 8) -> "ConcCondUNet":
        """The base Video-LDM's weights; the condition and mask input channels start at zero."""
        model = cls(unet_config=dict(base.config), cond_frames=cond_frames)
        state = base.state_dict()
        weight = state["conv_in.weight"]
        widened = torch.zeros(weight.shape[0], model.unet.config.in_channels, *weight.shape[2:], dtype=weight.dtype)
        widened[:, : weight.shape[1]] = weight
        model.unet.load_state_dict({**state, "conv_in.weight": widened})
        return model.to(base.device, base.dtype)

    @property
    def cond_frames(self) -> int:
        return self.config.cond_frames

    def condition_input(self, sample: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor:
        """[x_t, condition latents zero-padded to F frames, mask] along channels."""
        b, c, f, h, w = sample.shape
        cond = sample.new_zeros(b, c, f, h, w)
        mask = sample.new_zeros(b, 1, f, h, w)
        if cond_latents is not None:
            k = cond_latents.shape[2]
            require(k <= f, "cond_frames", k, f"at most F = {f} frames")
            cond[:, :, :k] = cond_latents.to(sample.dtype)
            mask[:, :, :k] = 1
        return torch.cat([sample, cond, mask], dim=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, text_embeds: torch.Tensor,
                image_embeds: torch.Tensor | None = None,
                cond_frames: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x_t, t, tau | condition). ``cond_frames`` are the VAE latents (b, c, F_cond, h, w)
        of the conditioning frames; ``image_embeds`` is accepted for interface parity and must
        be None (Conc-Cond has no APM)."""
        require(image_embeds is None, "apm", "anchor given", "no anchor: the Conc-Cond baseline has no APM")
        return self.unet(self.condition_input(sample, cond_frames), timestep, text_embeds).sample
