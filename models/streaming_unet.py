"""The StreamingT2V denoiser: the Video-LDM UNet with CAM and APM attached (paper Fig. 2-3).

:class:`StreamingT2VUNet` owns the base ``UNet3DConditionModel`` (whose spatial cross-attention
layers carry APM's alpha_l), the :class:`ConditionalAttentionModule` and the
:class:`AppearancePreservationModule`, and runs the UNet's forward pass with CAM's merge (Eq. 5)
applied between the down path and the up path. Without conditioning frames and anchor it is
exactly the base Video-LDM, which is what the init-chunk stage uses.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from diffusers import UNet3DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from models.apm import AppearancePreservationModule, APMConfig
from models.cam import CAMConfig, ConditionalAttentionModule, EncodedFrames, cond_frame_count
from models.errors import require


def _as_config(cls: type, values: dict[str, Any]) -> Any:
    fields = cls.__dataclass_fields__
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


class StreamingT2VUNet(ModelMixin, ConfigMixin):
    """Video-LDM UNet + CAM + APM, saved and loaded as one diffusers model (safetensors)."""

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, unet_config: dict[str, Any], cam_config: dict[str, Any] | None = None,
                 apm_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.unet = UNet3DConditionModel(**{k: v for k, v in unet_config.items() if not k.startswith("_")})
        cam = _as_config(CAMConfig, cam_config or {})
        apm = _as_config(APMConfig, apm_config or {})
        require(apm.token_dim == self.unet.config.cross_attention_dim, "apm.token_dim",
                apm.token_dim, f"the UNet's cross_attention_dim ({self.unet.config.cross_attention_dim})")
        # CAM copies the encoder before APM touches the UNet: the control branch keeps plain
        # cross-attention, as in the paper (APM acts on the main branch only).
        self.cam = ConditionalAttentionModule(self.unet, cam)
        self.apm = AppearancePreservationModule(apm)
        self.apm_layers = self.apm.install(self.unet)

    @classmethod
    def from_base(cls, unet: UNet3DConditionModel, cam: CAMConfig, apm: APMConfig) -> "StreamingT2VUNet":
        """StreamingT2V as it starts training: the base UNet's weights, CAM's control branch
        initialised from them, zero-initialised P_out / E_cond output and alpha_l = 0."""
        with torch.device("meta" if unet.device.type == "meta" else "cpu"):
            model = cls(unet_config=dict(unet.config), cam_config=asdict(cam), apm_config=asdict(apm))
        if unet.device.type != "meta":
            model.load_base_weights(unet.state_dict())
        model.to(unet.device)
        return model if unet.dtype == model.dtype else model.to(dtype=unet.dtype)

    def load_base_weights(self, base_state: dict[str, torch.Tensor]) -> None:
        """Load Video-LDM UNet weights into the main branch and CAM's control-branch copy."""
        missing, unexpected = self.unet.load_state_dict(base_state, strict=False)
        require(not unexpected, "unet weights", unexpected[:5], "keys of a UNet3DConditionModel")
        require(all(".processor." in k for k in missing), "unet weights",
                [k for k in missing if ".processor." not in k][:5], "a complete UNet3DConditionModel state dict")
        self.cam.control.copy_weights_from(self.unet)

    @property
    def cond_frames(self) -> int:
        return self.cam.config.cond_frames

    def apm_gates(self) -> list[nn.Parameter]:
        """Every APM layer's alpha_l (Eq. 6), in the order of ``apm_layers``."""
        processors = self.unet.attn_processors
        return [processors[n].alpha for n in self.apm_layers]

    def apm_parameters(self) -> list[nn.Parameter]:
        """APM's parameters: the resampler, the token mixer(s) and every layer's alpha_l (Eq. 6)."""
        processors = self.unet.attn_processors
        return list(self.apm.parameters()) + [p for n in self.apm_layers for p in processors[n].parameters()]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, text_embeds: torch.Tensor,
                image_embeds: torch.Tensor | None = None,
                cond_frames: torch.Tensor | EncodedFrames | None = None) -> torch.Tensor:
        """Noise prediction eps(x_t, t, tau, a) for a chunk.

        sample: (b, c, F, h, w) noisy latents; text_embeds: (b, 77, d) CLIP text tokens;
        image_embeds: (b, e) CLIP embedding of the anchor frame (APM), or None;
        cond_frames: (b, 3, F_cond, H, W) conditioning frames in [-1, 1] (CAM), or their
        :class:`EncodedFrames` (computed once per chunk), or None.
        """
        unet = self.unet
        b, _, f = sample.shape[:3]
        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(b) if timesteps.numel() == 1 else timesteps
        context = self.apm.context(text_embeds, image_embeds)

        emb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
        emb = emb.repeat_interleave(f, dim=0)
        context = context.repeat_interleave(f, dim=0)
        x = unet.conv_in(rearrange(sample, "b c f h w -> (b f) c h w"))
        x = unet.transformer_in(x, num_frames=f, return_dict=False)[0]

        skips: tuple[torch.Tensor, ...] = (x,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=context, num_frames=f)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=f)
            skips += res
        x = unet.mid_block(x, emb, encoder_hidden_states=context, num_frames=f)

        if cond_frames is not None:
            k = cond_frame_count(cond_frames)
            features = self.cam.features(sample, timesteps, text_embeds, cond_frames)
            skips, x = self.cam.inject(skips, x, features, f, k)

        # As in diffusers: pass explicit upsample sizes only when h, w are not multiples of 2^ups.
        forward_size = any(s % 2**unet.num_upsamplers for s in sample.shape[-2:])
        for block in unet.up_blocks:
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if skips and forward_size else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context,
                          upsample_size=upsample_size, num_frames=f)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                          num_frames=f)

        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        x = unet.conv_out(x)
        return rearrange(x, "(b f) c h w -> b c f h w", f=f)
