"""Conditional Attention Module, CAM (paper Sec. 4.1, Fig. 3, Eq. 4-5): the short-term memory.

CAM reads the last ``F_cond`` frames of the previous chunk and injects them into every long
skip connection of the Video-LDM UNet:

* :class:`FrameEncoder` is E_cond, a frame-wise 2D conv encoder (convs, layer norms, SiLU)
  ending in a zero-initialised convolution, so it adds nothing at initialisation;
* :class:`ControlBranch` is a ControlNet-like copy of the UNet encoder (conv_in, time embedding,
  first temporal transformer, down blocks, mid block) initialised from the UNet's weights; the
  encoded frames are added to the output of its first temporal transformer block;
* :class:`SkipMerger` is, per skip connection, group norm -> P_in -> temporal multi-head
  attention whose queries are the ``F`` frames of the skip feature and whose keys/values are the
  ``F_cond`` CAM frames at the same pixel (Eq. 4) -> zero-initialised P_out -> residual add
  (Eq. 5). Because P_out starts at zero, CAM leaves the base model's output unchanged until
  trained.

Eq. 4's attention has no notion of frame order: every query frame sees the F_cond keys as an
unordered set. :attr:`CAMConfig.frame_distance_bias` adds an ALiBi-style bias (Press et al.
2022) to its logits, -s_h |j - i| per head h for query frame j and key frame i (the conditioning
frames are the chunk's first F_cond frames, which the chunk re-covers), with learned slopes s_h
starting at 1, 1/2, 1/4, ... P_out still starts at zero, so CAM with the bias still leaves the
base model unchanged at initialisation. The bias lets each re-covered frame attend most to its
own conditioning frame rather than to all of them alike.

The control branch is a copy of the UNet encoder, cross-attention included, and in the paper it
reads the prompt like the main branch. With :attr:`CAMConfig.control_text` ``"empty"`` it reads
the text encoder's encoding of the empty prompt instead, in every guidance branch: what it
hands the skip connections then depends on the frames and x_t only, so classifier-free guidance
(Eq. 13) cannot amplify a text/null difference in the re-covered frames. The empty-prompt
encoding is a non-persistent buffer that :class:`~models.streaming_t2v.StreamingT2V`
sets from its frozen text encoder (:meth:`ConditionalAttentionModule.set_empty_text`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet3DConditionModel
from einops import rearrange
from torch import nn

from models.errors import require


CONTROL_TEXTS = ("prompt", "empty")


@dataclass(frozen=True)
class CAMConfig:
    """CAM hyper-parameters. Defaults are the paper's (ModelScope sizes)."""

    cond_frames: int = 8  # F_cond
    frame_encoder_channels: tuple[int, ...] = (32, 96, 256, 512)
    frame_encoder_norm: bool = True  # the paper's E_cond has layer norms; the reference has none
    attention_head_dim: int = 64
    # Learned per-head bias -s_h |j - i| on Eq. 4's logits (module docstring); the paper's
    # attention (and the released checkpoint) has none.
    frame_distance_bias: bool = False
    # What the control branch's cross-attention reads: "prompt" (the paper's) or "empty", the
    # encoding of the empty prompt whatever the prompt (module docstring).
    control_text: str = "prompt"

    def __post_init__(self) -> None:
        require(self.cond_frames >= 1, "cam.cond_frames", self.cond_frames, "an integer >= 1")
        require(len(self.frame_encoder_channels) >= 1 and all(c >= 1 for c in self.frame_encoder_channels),
                "cam.frame_encoder_channels", self.frame_encoder_channels, "a non-empty tuple of positive ints")
        require(self.attention_head_dim >= 1, "cam.attention_head_dim", self.attention_head_dim, ">= 1")
        require(self.control_text in CONTROL_TEXTS, "cam.control_text", self.control_text, f"one of {CONTROL_TEXTS}")

    @property
    def downsampling_factor(self) -> int:
        """E_cond halves the resolution between consecutive channel widths."""
        return 2 ** (len(self.frame_encoder_channels) - 1)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of a (n, c, h, w) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.norm(rearrange(x, "n c h w -> n h w c")), "n h w c -> n c h w")


class FrameEncoder(nn.Module):
    """E_cond: frames in [-1, 1] at pixel resolution -> features at latent resolution.

    conv_in, then for each further width a stride-2 conv (with a stride-1 conv before it), each
    followed by a layer norm and SiLU, and a zero-initialised ``conv_out`` to the UNet's first
    block width.
    """

    def __init__(self, out_channels: int, channels: tuple[int, ...] = (32, 96, 256, 512),
                 norm: bool = True, in_channels: int = 3) -> None:
        super().__init__()

        def act(c: int) -> list[nn.Module]:
            return ([ChannelLayerNorm(c)] if norm else []) + [nn.SiLU()]

        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), *act(channels[0])]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_in, 3, padding=1), *act(c_in)]
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, stride=2), *act(c_out)]
        self.body = nn.Sequential(*layers)
        self.conv_out = zero_module(nn.Conv2d(channels[-1], out_channels, 3, padding=1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, 3, F_cond, H, W) -> (b * F_cond, c, H / s, W / s), frames folded into the batch as
        diffusers' 3D UNet blocks expect."""
        x = rearrange(frames, "b c f h w -> (b f) c h w")
        return self.conv_out(self.body(x))


class SkipMerger(nn.Module):
    """Injection of one CAM feature into one skip connection (Eq. 4-5).

    x_SC' = P_in(GroupNorm(x_SC)) reshaped to (b*h*w, F, c); attention with queries from x_SC'
    and keys/values from x_CAM (b*h*w, F_cond, c); x_SC + P_out(attention). Keys and values are
    the CAM features themselves (Eq. 4 applies W_K, W_V to x_CAM directly). With
    ``distance_bias`` the logits of query frame j and key frame i get -s_h |j - i| (module
    docstring), s_h a learned slope per head.
    """

    def __init__(self, channels: int, norm_groups: int, head_dim: int, eps: float = 1e-6,
                 distance_bias: bool = False) -> None:
        super().__init__()
        require(channels % norm_groups == 0, "norm_num_groups", norm_groups, f"a divisor of {channels}")
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(norm_groups, channels, eps=eps)
        self.proj_in = nn.Linear(channels, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        self.proj_out = zero_module(nn.Linear(channels, channels))
        # Slopes 1, 1/2, 1/4, ... per head (ALiBi's geometric sequence, steeper for F <= 16
        # frames): every head starts out preferring nearer frames, the last ones barely.
        self.distance_slope = nn.Parameter(2.0 ** -torch.arange(self.heads, dtype=torch.float32)) if distance_bias else None

    def attention_bias(self, frames: int, cond_frames: int) -> torch.Tensor | None:
        """-s_h |j - i| as a (1, heads, F, F_cond) additive mask, or None without the bias."""
        if self.distance_slope is None:
            return None
        slope = self.distance_slope
        j = torch.arange(frames, device=slope.device, dtype=slope.dtype)
        i = torch.arange(cond_frames, device=slope.device, dtype=slope.dtype)
        distance = (j[:, None] - i[None, :]).abs()
        return -slope.view(1, -1, 1, 1) * distance

    def attention_inputs(self, skip: torch.Tensor, cam: torch.Tensor, frames: int,
                         cond_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (b*h*w, heads, F, d) and keys/values (b*h*w, heads, F_cond, d) of Eq. 4."""
        h, w = skip.shape[-2:]
        x = rearrange(skip, "(b f) c h w -> b c f h w", f=frames)
        x = rearrange(self.norm(x), "b c f h w -> (b h w) f c")  # spatio-temporal group norm
        x = self.proj_in(x)
        ctx = rearrange(cam, "(b k) c h w -> (b h w) k c", k=cond_frames)
        split = lambda t: rearrange(t, "n s (m d) -> n m s d", m=self.heads)  # noqa: E731
        return split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))

    def forward(self, skip: torch.Tensor, cam: torch.Tensor, frames: int, cond_frames: int) -> torch.Tensor:
        """skip: (b*F, c, h, w) UNet skip feature; cam: (b*F_cond, c, h, w) CAM feature."""
        h, w = skip.shape[-2:]
        q, k, v = self.attention_inputs(skip, cam, frames, cond_frames)
        bias = self.attention_bias(frames, cond_frames)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
        out = self.proj_out(self.to_out(rearrange(attn, "n m s d -> n s (m d)")))
        out = rearrange(out, "(b h w) f c -> (b f) c h w", h=h, w=w)
        return skip + out


@dataclass(frozen=True)
class EncodedFrames:
    """E_cond(conditioning frames), (b * F_cond, c, h, w). It depends on the conditioning frames
    only, not on x_t, t or the text, so sampling computes it once per chunk and every denoising
    step and guidance branch reuses it. (The rest of CAM, the control branch, reads x_t and t and
    runs at every step.)"""

    features: torch.Tensor
    batch: int
    frames: int

    @classmethod
    def of(cls, encoder: FrameEncoder, frames: torch.Tensor) -> "EncodedFrames":
        return cls(encoder(frames), frames.shape[0], frames.shape[2])

    def repeat(self, n: int) -> "EncodedFrames":
        """The encoding of ``torch.cat([frames] * n)`` (the guidance branches' batch)."""
        return EncodedFrames(torch.cat([self.features] * n), self.batch * n, self.frames)


def cond_frame_count(cond_frames: torch.Tensor | EncodedFrames) -> int:
    """F_cond of conditioning frames (b, 3, F_cond, H, W) or of their encoding."""
    return cond_frames.frames if isinstance(cond_frames, EncodedFrames) else cond_frames.shape[2]


class ControlBranch(nn.Module):
    """ControlNet-like trainable copy of the UNet encoder, run on the ``F_cond`` frames."""

    def __init__(self, unet: UNet3DConditionModel, frame_encoder: FrameEncoder) -> None:
        super().__init__()
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.transformer_in = copy.deepcopy(unet.transformer_in)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.frame_encoder = frame_encoder

    def copy_weights_from(self, unet: UNet3DConditionModel) -> None:
        """Re-initialise the copy from ``unet``'s current weights (ControlNet-style init)."""
        for name in ("conv_in", "time_proj", "time_embedding", "transformer_in", "down_blocks", "mid_block"):
            state = {k: v for k, v in getattr(unet, name).state_dict().items() if ".processor." not in k}
            getattr(self, name).load_state_dict(state)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                frames: torch.Tensor | EncodedFrames) -> tuple[torch.Tensor, ...]:
        """sample: (b, c, F_cond, h, w) noisy latents; frames: (b, 3, F_cond, H, W) conditioning
        frames, or their :class:`EncodedFrames`. Returns one feature per UNet skip connection,
        then the mid-block output."""
        b, _, k = sample.shape[:3]
        encoded = frames if isinstance(frames, EncodedFrames) else EncodedFrames.of(self.frame_encoder, frames)
        require(encoded.features.shape[0] == b * k, "cond_frames", (encoded.batch, encoded.frames),
                f"{b} videos x {k} frames, as the noisy latents")
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        emb = emb.repeat_interleave(k, dim=0)
        text = text.repeat_interleave(k, dim=0)
        x = self.conv_in(rearrange(sample, "b c f h w -> (b f) c h w"))
        x = self.transformer_in(x, num_frames=k, return_dict=False)[0]
        x = x + encoded.features
        features = [x]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=text, num_frames=k)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=k)
            features.extend(res)
        features.append(self.mid_block(x, emb, encoder_hidden_states=text, num_frames=k))
        return tuple(features)


def skip_channels(unet: UNet3DConditionModel) -> list[int]:
    """Channels of each skip connection (in the order the down path produces them) and, last,
    of the mid-block output: the places CAM injects into."""
    cfg = unet.config
    widths = list(cfg.block_out_channels)
    channels = [widths[0]]
    for i, block in enumerate(unet.down_blocks):
        channels += [widths[i]] * cfg.layers_per_block
        if block.downsamplers is not None:
            channels.append(widths[i])
    channels.append(widths[-1])
    return channels


class ConditionalAttentionModule(nn.Module):
    """CAM = E_cond + control branch + one :class:`SkipMerger` per skip connection and the mid block."""

    def __init__(self, unet: UNet3DConditionModel, config: CAMConfig) -> None:
        super().__init__()
        self.config = config
        cfg = unet.config
        encoder = FrameEncoder(cfg.block_out_channels[0], tuple(config.frame_encoder_channels),
                               norm=config.frame_encoder_norm)
        self.control = ControlBranch(unet, encoder)
        self.mergers = nn.ModuleList(
            SkipMerger(c, cfg.norm_num_groups, config.attention_head_dim, distance_bias=config.frame_distance_bias)
            for c in skip_channels(unet)
        )
        # (1, tokens, d): the empty prompt's encoding, for control_text "empty" (set_empty_text).
        self.register_buffer("empty_text", None, persistent=False)

    def set_empty_text(self, empty_text: torch.Tensor) -> None:
        """The text encoder's encoding (1, tokens, d) of the empty prompt, which the control
        branch reads with ``control_text="empty"``."""
        require(empty_text.ndim == 3 and empty_text.shape[0] == 1, "empty_text", tuple(empty_text.shape),
                "one encoded prompt, (1, tokens, d)")
        self.empty_text = empty_text.detach()

    def control_context(self, text: torch.Tensor) -> torch.Tensor:
        """What the control branch's cross-attention reads for prompts encoded as ``text``."""
        if self.config.control_text == "prompt":
            return text
        require(self.empty_text is not None, "cam.empty_text", None,
                "the empty prompt's encoding (set_empty_text; StreamingT2V sets it) for control_text 'empty'")
        require(self.empty_text.shape[1:] == text.shape[1:], "cam.empty_text", tuple(self.empty_text.shape),
                f"(1, {text.shape[1]}, {text.shape[2]}), like the prompt encodings")
        return self.empty_text.to(text.dtype).expand(text.shape[0], -1, -1)

    def encode_frames(self, cond_frames: torch.Tensor) -> EncodedFrames:
        """E_cond of the conditioning frames (b, 3, F_cond, H, W), for reuse across steps."""
        return EncodedFrames.of(self.control.frame_encoder, cond_frames)

    def features(self, sample: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                 cond_frames: torch.Tensor | EncodedFrames) -> tuple[torch.Tensor, ...]:
        """CAM features x_CAM for every injection point. The control branch sees the first
        ``F_cond`` frames of the noisy chunk latent, as in the reference implementation, and
        reads the prompt or the empty prompt (:attr:`CAMConfig.control_text`)."""
        k = cond_frame_count(cond_frames)
        require(k <= sample.shape[2], "cond_frames", k, f"<= the chunk's frame count {sample.shape[2]}")
        return self.control(sample[:, :, :k], timesteps, self.control_context(text), cond_frames)

    def inject(self, skips: tuple[torch.Tensor, ...], mid: torch.Tensor, features: tuple[torch.Tensor, ...],
               frames: int, cond_frames: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Eq. 5 at every long skip connection and at the mid-block output."""
        merged = tuple(m(s, f, frames, cond_frames) for m, s, f in zip(self.mergers, skips, features))
        return merged, self.mergers[-1](mid, features[-1], frames, cond_frames)
