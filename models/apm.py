"""Appearance Preservation Module, APM (paper Sec. 4.2, Eq. 6): the long-term memory.

The CLIP image embedding of an anchor frame of the first chunk is expanded by an MLP (one hidden
layer of width 1280) into 16 tokens, concatenated with the 77 CLIP text tokens, and a 1D
convolution over the token axis maps the 93 tokens back to 77: x_mixed. Every spatial
cross-attention layer l of the UNet gets a scalar alpha_l, initialised to 0, and attends to

    x_cross = SiLU(alpha_l) * x_mixed + x_text                                    (Eq. 6)

SiLU(0) = 0, so at initialisation APM leaves the base model's output unchanged.

Paper vs reference: the paper mixes tokens once (``token_mixing="shared"``, the default); the
reference implementation gives every cross-attention layer its own Conv1d + LayerNorm
(``token_mixing="per_layer"``, ``mixer_norm=True``), which the official checkpoint needs.

How the layers receive both token sets: the UNet passes ``encoder_hidden_states`` of
``num_text_tokens + n`` tokens to every cross-attention. :class:`APMAttnProcessor` splits the
first ``num_text_tokens`` (x_text) from the rest (x_mixed when mixing is shared, the image
tokens when it is per layer) and builds Eq. 6. With only the text tokens present it is plain
cross-attention, so the same UNet also serves the init-chunk stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import UNet3DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from torch import nn

from models.errors import require

TokenMixing = Literal["shared", "per_layer"]


@dataclass(frozen=True)
class APMConfig:
    """APM hyper-parameters. Defaults are the paper's (ModelScope sizes)."""

    image_embed_dim: int = 1024
    hidden_dim: int = 1280
    num_image_tokens: int = 16
    token_dim: int = 1024  # = the UNet's cross-attention dim
    num_text_tokens: int = 77
    mixer_kernel_size: int = 3
    token_mixing: TokenMixing = "shared"
    mixer_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("image_embed_dim", "hidden_dim", "num_image_tokens", "token_dim", "num_text_tokens"):
            require(getattr(self, name) >= 1, f"apm.{name}", getattr(self, name), "an integer >= 1")
        require(self.mixer_kernel_size >= 1 and self.mixer_kernel_size % 2 == 1, "apm.mixer_kernel_size",
                self.mixer_kernel_size, "an odd integer >= 1 (same padding)")
        require(self.token_mixing in ("shared", "per_layer"), "apm.token_mixing", self.token_mixing,
                "one of 'shared', 'per_layer'")


class ImageTokenResampler(nn.Module):
    """CLIP image embedding (b, e) -> (b, 16, d) anchor tokens: Linear, SiLU, Linear."""

    def __init__(self, config: APMConfig) -> None:
        super().__init__()
        self.num_tokens = config.num_image_tokens
        self.mlp = nn.Sequential(
            nn.Linear(config.image_embed_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, config.num_image_tokens * config.token_dim),
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return rearrange(self.mlp(image_embeds), "b (n d) -> b n d", n=self.num_tokens)


class TokenMixer(nn.Module):
    """concat(x_text, image tokens): (b, 77 + 16, d) -> x_mixed (b, 77, d) by a Conv1d whose
    channels are the tokens (93 -> 77) and which slides along the feature axis."""

    def __init__(self, config: APMConfig) -> None:
        super().__init__()
        n_in = config.num_text_tokens + config.num_image_tokens
        self.conv = nn.Conv1d(n_in, config.num_text_tokens, config.mixer_kernel_size,
                              padding=config.mixer_kernel_size // 2)
        self.norm = nn.LayerNorm(config.token_dim) if config.mixer_norm else nn.Identity()

    def forward(self, text: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(torch.cat([text, image_tokens], dim=1)))


class APMAttnProcessor(nn.Module):
    """Cross-attention processor implementing Eq. 6 with the layer's own alpha_l."""

    def __init__(self, config: APMConfig) -> None:
        super().__init__()
        self.num_text_tokens = config.num_text_tokens
        self.alpha = nn.Parameter(torch.zeros(()))
        self.mixer = TokenMixer(config) if config.token_mixing == "per_layer" else None
        self.attend = AttnProcessor2_0()

    def cross_context(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        text = encoder_hidden_states[:, : self.num_text_tokens]
        extra = encoder_hidden_states[:, self.num_text_tokens:]
        if extra.shape[1] == 0:
            return text
        mixed = self.mixer(text, extra) if self.mixer is not None else extra
        return F.silu(self.alpha).to(mixed.dtype) * mixed + text

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None:
            encoder_hidden_states = self.cross_context(encoder_hidden_states)
        return self.attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def spatial_cross_attention_names(unet: UNet3DConditionModel) -> list[str]:
    """Processor names of the spatial cross-attention layers (``attentions.*.attn2``): the
    temporal transformers' attn2 is a second self-attention and gets no text."""
    return [n for n in unet.attn_processors if ".attentions." in n and n.endswith("attn2.processor")]


class AppearancePreservationModule(nn.Module):
    """Resampler (+ shared token mixer) of APM. The per-layer alpha_l (and per-layer mixers)
    live in the :class:`APMAttnProcessor` installed by :meth:`install`."""

    def __init__(self, config: APMConfig) -> None:
        super().__init__()
        self.config = config
        self.resampler = ImageTokenResampler(config)
        self.mixer = TokenMixer(config) if config.token_mixing == "shared" else None

    def install(self, unet: UNet3DConditionModel) -> list[str]:
        """Give every spatial cross-attention layer of ``unet`` an APM processor. Returns their names."""
        names = spatial_cross_attention_names(unet)
        processors = dict(unet.attn_processors)
        processors.update({n: APMAttnProcessor(self.config) for n in names})
        unet.set_attn_processor(processors)
        return names

    def context(self, text: torch.Tensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """The ``encoder_hidden_states`` handed to the UNet: x_text alone without an anchor, else
        x_text followed by x_mixed (shared mixing) or by the anchor tokens (per-layer mixing)."""
        if image_embeds is None:
            return text
        tokens = self.resampler(image_embeds.to(text.dtype))
        extra = self.mixer(text, tokens) if self.mixer is not None else tokens
        return torch.cat([text, extra], dim=1)
