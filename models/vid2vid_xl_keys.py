"""Key mapping of MS-Vid2Vid-XL's three checkpoints onto our modules, strict: an unrecognised
key, a missing one or a reshape other than linear <-> 1x1 convolution stops the conversion with
the keys named (:mod:`models.key_mapping`). Sizes are read from the weights (the released UNet is
``Vid2VidSDUNet()``'s defaults: 320 x (1, 2, 4, 4), two blocks per level, attention at the three
highest resolutions, head dim 64, context 1024).

UNet (``ckpt_unet``, its ``state_dict``). L levels from the highest resolution, R blocks per
level, n(i, j) = 1 + i (R + 1) + j, m(i, j) = i (R + 1) + j; up level i is down level L - 1 - i:

==========================================  ==================================================
theirs (``Vid2VidSDUNet``)                  ours (:class:`~models.vid2vid_unet.Vid2VidUNet`)
==========================================  ==================================================
``time_embed.{0,2}``                        ``time_embedding.linear_{1,2}``
``input_blocks.0.0``                        ``conv_in``
``input_blocks.0.1``                        ``transformer_in`` (T)
``input_blocks.n(i,j).0``                   ``down_blocks.i.resnets.j`` + ``temp_convs.j`` (R)
``input_blocks.n(i,j).1`` / ``.2``          ``down_blocks.i.attentions.j`` / ``temp_attentions.j`` (T)
``input_blocks.n(i,R).op``                  ``down_blocks.i.downsamplers.0.conv``
``middle_block.0`` / ``.3``                 ``mid_block.resnets.0`` / ``.1`` + ``temp_convs`` (R)
``middle_block.1`` / ``.2``                 ``mid_block.attentions.0`` / ``temp_attentions.0`` (T)
``output_blocks.m(i,j).0``                  ``up_blocks.i.resnets.j`` + ``temp_convs.j`` (R)
``output_blocks.m(i,j).1`` / ``.2``         ``up_blocks.i.attentions.j`` / ``temp_attentions.j`` (T)
``output_blocks.m(i,R).{1 or 3}.conv``      ``up_blocks.i.upsamplers.0.conv`` (after the attentions)
``out.0`` / ``out.2``                       ``conv_norm_out`` / ``conv_out``
==========================================  ==================================================

(R) ResBlock: ``in_layers.0`` -> ``norm1``, ``in_layers.2`` -> ``conv1``, ``emb_layers.1`` ->
``time_emb_proj``, ``out_layers.0`` -> ``norm2``, ``out_layers.3`` -> ``conv2``,
``skip_connection`` -> ``conv_shortcut``, ``temopral_conv.*`` -> ``temp_convs.j.*`` (same names).
Spatial and temporal transformers keep their names (``norm``, ``proj_in``, ``proj_out``,
``transformer_blocks.0.{norm1,norm2,norm3,attn1,attn2,ff}``); (T) their 1x1 Conv1d ``proj_in`` /
``proj_out`` become Linear weights, the one reshape allowed (:mod:`models.key_mapping`).

VAE (``ckpt_autoencoder``: the SD 2.1 checkpoint; ModelScope keeps its ``first_stage_model.*``):
``encoder.down.{i}.block.{j}`` -> ``encoder.down_blocks.{i}.resnets.{j}``,
``encoder.down.{i}.downsample.conv`` -> ``encoder.down_blocks.{i}.downsamplers.0.conv``,
``decoder.up.{L-1-i}.block.{j}`` -> ``decoder.up_blocks.{i}.resnets.{j}``,
``decoder.up.{L-1-i}.upsample.conv`` -> ``decoder.up_blocks.{i}.upsamplers.0.conv``,
``{encoder,decoder}.mid.block_{1,2}`` -> ``mid_block.resnets.{0,1}``, ``mid.attn_1.{norm,q,k,v,
proj_out}`` -> ``mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`` (1x1 conv -> Linear),
``norm_out`` -> ``conv_norm_out``, ``nin_shortcut`` -> ``conv_shortcut``; ``conv_in``,
``conv_out``, ``quant_conv``, ``post_quant_conv`` and the ResNet norms/convs keep their names.
Dropped: the rest of the SD 2.1 checkpoint (``model.*``, ``cond_stage_model.*``, ``model_ema.*``,
the DDPM schedule buffers).

Text encoder (``ckpt_clip``: OpenCLIP ViT-H-14; ModelScope's ``FrozenOpenCLIPEmbedder`` runs the
text tower to its penultimate block, then ``ln_final``: a CLIPTextModel of layers - 1 blocks
whose final layer norm is ``ln_final``, as diffusers does for SD 2.x): ``token_embedding`` ->
``embeddings.token_embedding``, ``positional_embedding`` -> ``embeddings.position_embedding.weight``,
``transformer.resblocks.{i}`` -> ``encoder.layers.{i}`` (``ln_1``/``ln_2`` ->
``layer_norm1``/``layer_norm2``, ``attn.in_proj_{weight,bias}`` split into
``self_attn.{q,k,v}_proj``, ``attn.out_proj`` -> ``self_attn.out_proj``, ``mlp.c_fc``/``c_proj``
-> ``mlp.fc1``/``fc2``), ``ln_final`` -> ``final_layer_norm``; heads = width / 64 (OpenCLIP's
head width). Dropped: the last block (never run), ``visual.*``, ``text_projection``,
``logit_scale``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel

from models.errors import ConfigError
from models.key_mapping import KeyReport, load_strict
from models.vid2vid_unet import DOWNSAMPLE_PADDING, Vid2VidUNet

TEXT_HEAD_WIDTH = 64  # OpenCLIP's CLIPTextCfg.heads = width / 64
_DDPM_BUFFERS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "logvar"}
_SD_PARTS = ("model.", "cond_stage_model.", "model_ema.")

State = dict[str, torch.Tensor]


# -- UNet -----------------------------------------------------------------------------------------
_RESBLOCK = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
             "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}


def _resblock_key(rest: str, prefix: str, j: int) -> str | None:
    if rest.startswith("temopral_conv."):
        return f"{prefix}.temp_convs.{j}.{rest[len('temopral_conv.'):]}"
    for theirs, ours in _RESBLOCK.items():
        if rest.startswith(theirs):
            return f"{prefix}.resnets.{j}.{ours}{rest[len(theirs):]}"
    return None


class UNetLayout:
    """Levels, blocks per level and attention levels of a Vid2VidSDUNet state dict."""

    def __init__(self, state: State) -> None:
        def need(key: str) -> torch.Tensor:
            if key not in state:
                raise ConfigError("checkpoint (MS-Vid2Vid-XL UNet)", key, "present (a Vid2VidSDUNet state dict)")
            return state[key]

        need("time_embed.0.weight")
        self.in_channels = need("input_blocks.0.0.weight").shape[1]
        self.out_channels = need("out.2.weight").shape[0]
        self.head_dim = need("input_blocks.0.1.proj_in.weight").shape[0] // 8  # transformer_in: 8 heads
        self.context_dim = need("middle_block.1.transformer_blocks.0.attn2.to_k.weight").shape[1]
        self.channels: list[int] = []
        self.attention: list[bool] = []
        self.blocks_per_level = 0
        n = 1
        while f"input_blocks.{n}.0.in_layers.0.weight" in state:
            j = 0
            self.channels.append(state[f"input_blocks.{n}.0.out_layers.3.weight"].shape[0])
            self.attention.append(f"input_blocks.{n}.1.norm.weight" in state)
            while f"input_blocks.{n}.0.in_layers.0.weight" in state:
                n, j = n + 1, j + 1
            self.blocks_per_level = self.blocks_per_level or j
            if f"input_blocks.{n}.op.weight" not in state:
                break
            n += 1
        if not self.channels:
            raise ConfigError("checkpoint (MS-Vid2Vid-XL UNet)", "input_blocks.1.0",
                              "present (a Vid2VidSDUNet state dict)")

    @property
    def levels(self) -> int:
        return len(self.channels)

    def unet_config(self) -> dict:
        down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in self.attention)
        up = tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(self.attention))
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, down_block_types=down,
                    up_block_types=up, block_out_channels=tuple(self.channels),
                    layers_per_block=self.blocks_per_level, downsample_padding=DOWNSAMPLE_PADDING, act_fn="silu",
                    norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=self.context_dim,
                    attention_head_dim=self.head_dim)

    def input_block(self, n: int) -> tuple[str, int, int]:
        """('res', level, j) or ('down', level, R) of input block n >= 1."""
        i, j = divmod(n - 1, self.blocks_per_level + 1)
        return ("down" if j == self.blocks_per_level else "res", i, j)

    def key(self, key: str) -> str | None:
        """Our key for a Vid2VidSDUNet key, or None when the key has no place in the layout."""
        r = self.blocks_per_level
        if m := re.fullmatch(r"time_embed\.([02])\.(weight|bias)", key):
            return f"time_embedding.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
        if m := re.fullmatch(r"out\.([02])\.(weight|bias)", key):
            return f"{'conv_norm_out' if m.group(1) == '0' else 'conv_out'}.{m.group(2)}"
        if key.startswith("input_blocks.0.0."):
            return "conv_in." + key[len("input_blocks.0.0."):]
        if key.startswith("input_blocks.0.1."):
            return "transformer_in." + key[len("input_blocks.0.1."):]
        if m := re.fullmatch(r"input_blocks\.(\d+)\.op\.(weight|bias)", key):
            kind, i, _ = self.input_block(int(m.group(1)))
            if kind != "down" or i >= self.levels - 1:
                return None
            return f"down_blocks.{i}.downsamplers.0.conv.{m.group(2)}"
        if m := re.fullmatch(r"input_blocks\.(\d+)\.([012])\.(.+)", key):
            kind, i, j = self.input_block(int(m.group(1)))
            if kind != "res" or i >= self.levels:
                return None
            return self._block(f"down_blocks.{i}", j, int(m.group(2)), m.group(3), self.attention[i], upsample=False)
        if m := re.fullmatch(r"middle_block\.([0-3])\.(.+)", key):
            part, rest = int(m.group(1)), m.group(2)
            if part in (0, 3):
                return _resblock_key(rest, "mid_block", part // 3)
            return f"mid_block.{'attentions' if part == 1 else 'temp_attentions'}.0.{rest}"
        if m := re.fullmatch(r"output_blocks\.(\d+)\.([0-3])\.(.+)", key):
            i, j = divmod(int(m.group(1)), r + 1)
            if i >= self.levels:
                return None
            upsample = j == r and i < self.levels - 1
            return self._block(f"up_blocks.{i}", j, int(m.group(2)), m.group(3),
                               self.attention[self.levels - 1 - i], upsample)
        return None

    @staticmethod
    def _block(prefix: str, j: int, part: int, rest: str, attention: bool, upsample: bool) -> str | None:
        if part == 0:
            return _resblock_key(rest, prefix, j)
        if attention and part in (1, 2):
            return f"{prefix}.{'attentions' if part == 1 else 'temp_attentions'}.{j}.{rest}"
        if upsample and part == (3 if attention else 1) and rest in ("conv.weight", "conv.bias"):
            return f"{prefix}.upsamplers.0.{rest}"
        return None


def classify_unet(state: State) -> KeyReport:
    layout = UNetLayout(state)
    report = KeyReport()
    for key in state:
        if (ours := layout.key(key)) is not None:
            report.mapped[key] = ours
        else:
            report.unrecognised.append(key)
    return report


def convert_unet(state: State, checkpoint: str = "state dict") -> Vid2VidUNet:
    """A :class:`Vid2VidUNet` holding a Vid2VidSDUNet state dict's weights (strict)."""
    report = classify_unet(state)
    report.require_complete(checkpoint, "MS-Vid2Vid-XL's UNet (Vid2VidSDUNet)")
    with torch.device("meta"):
        unet = Vid2VidUNet(**UNetLayout(state).unet_config())
    return load_strict(unet, {ours: state[theirs] for theirs, ours in report.mapped.items()}, "MS-Vid2Vid-XL UNet")


# -- VAE ------------------------------------------------------------------------------------------
VAE_PREFIX = "first_stage_model."
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _vae_resnet(rest: str) -> str:
    return rest.replace("nin_shortcut.", "conv_shortcut.")


def _vae_key(key: str, levels: int) -> str | None:
    """Our diffusers AutoencoderKL key for an LDM first-stage key (prefix stripped)."""
    if re.fullmatch(r"(quant_conv|post_quant_conv|(encoder|decoder)\.(conv_in|conv_out))\.(weight|bias)", key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key):
        return f"{m.group(1)}.conv_norm_out.{m.group(2)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key):
        return f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}.{_vae_resnet(m.group(3))}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", key):
        return f"{m.group(1)}.mid_block.attentions.0.{_VAE_ATTENTION[m.group(2)]}.{m.group(3)}"
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", key):
        return f"encoder.down_blocks.{m.group(1)}.resnets.{m.group(2)}.{_vae_resnet(m.group(3))}"
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key):
        return f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", key):
        return f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.resnets.{m.group(2)}.{_vae_resnet(m.group(3))}"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key):
        return f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
    return None


def _vae_levels(state: State) -> int:
    return len({m.group(1) for k in state if (m := re.match(r"first_stage_model\.encoder\.down\.(\d+)\.", k))})


def classify_vae(state: State) -> KeyReport:
    levels = _vae_levels(state)
    report = KeyReport()
    for key in state:
        if key.startswith(VAE_PREFIX):
            if (ours := _vae_key(key[len(VAE_PREFIX):], levels)) is not None:
                report.mapped[key] = ours
            else:
                report.unrecognised.append(key)
        elif key.startswith(_SD_PARTS) or key in _DDPM_BUFFERS:
            report.dropped[key] = "not the autoencoder (the SD 2.1 checkpoint's UNet, text encoder or schedule)"
        else:
            report.unrecognised.append(key)
    return report


def vae_config(state: State) -> dict:
    """diffusers AutoencoderKL config of an LDM first stage (SD: ch 128 x (1, 2, 4, 4), z 4)."""
    def need(key: str) -> torch.Tensor:
        if VAE_PREFIX + key not in state:
            raise ConfigError("checkpoint (MS-Vid2Vid-XL autoencoder)", VAE_PREFIX + key,
                              "present (an LDM first stage)")
        return state[VAE_PREFIX + key]

    levels = _vae_levels(state)
    channels = tuple(need(f"encoder.down.{i}.block.0.conv1.weight").shape[0] for i in range(levels))
    blocks = sum(bool(re.fullmatch(r"first_stage_model\.encoder\.down\.0\.block\.\d+\.conv1\.weight", k))
                 for k in state)
    return dict(in_channels=need("encoder.conv_in.weight").shape[1],
                out_channels=need("decoder.conv_out.weight").shape[0],
                latent_channels=need("decoder.conv_in.weight").shape[1], block_out_channels=channels,
                layers_per_block=blocks, down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=32, act_fn="silu",
                sample_size=256, scaling_factor=0.18215)


def convert_vae(state: State, checkpoint: str = "state dict") -> AutoencoderKL:
    report = classify_vae(state)
    report.require_complete(checkpoint, "an SD 2.1 autoencoder checkpoint (first_stage_model.*)")
    with torch.device("meta"):
        vae = AutoencoderKL(**vae_config(state))
    converted = {ours: state[theirs] for theirs, ours in report.mapped.items()}
    return load_strict(vae, converted, "MS-Vid2Vid-XL autoencoder")


# -- text encoder ----------------------------------------------------------------------------------
_TEXT_LAYER = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
               "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
_TEXT_DROPPED = {"text_projection": "pooled CLIP embedding (not used: the penultimate layer's tokens are)",
                 "logit_scale": "CLIP's contrastive temperature (not used)",
                 "attn_mask": "the causal mask (CLIPTextModel builds its own)"}


def _text_layers(state: State) -> int:
    return len({m.group(1) for k in state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})


def _text_key(key: str, layers: int) -> tuple[str, ...] | str | None:
    """Our key(s) for an OpenCLIP key, a reason to drop it, or None if unknown."""
    simple = {"token_embedding.weight": "embeddings.token_embedding.weight",
              "positional_embedding": "embeddings.position_embedding.weight",
              "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
    if key in simple:
        return (simple[key],)
    if m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key):
        i, rest = int(m.group(1)), m.group(2)
        prefix = f"encoder.layers.{i}."
        if m2 := re.fullmatch(r"attn\.in_proj_(weight|bias)", rest):
            target = tuple(f"{prefix}self_attn.{p}_proj.{m2.group(1)}" for p in "qkv")
        else:
            target = next(((prefix + ours + rest[len(theirs):],) for theirs, ours in _TEXT_LAYER.items()
                           if rest.startswith(theirs) and rest[len(theirs):] in ("weight", "bias")), None)
        if target is not None and i == layers - 1:
            return "the last block (never run: the penultimate layer is used)"
        return target
    if key.startswith("visual."):
        return "the image tower (not used)"
    return _TEXT_DROPPED.get(key)


def classify_text(state: State) -> KeyReport:
    layers = _text_layers(state)
    report = KeyReport()
    for key in state:
        target = _text_key(key, layers)
        if isinstance(target, tuple):
            report.mapped[key] = ",".join(target)
        elif isinstance(target, str):
            report.dropped[key] = target
        else:
            report.unrecognised.append(key)
    return report


def text_config(state: State) -> CLIPTextConfig:
    for key in ("token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight"):
        if key not in state:
            raise ConfigError("checkpoint (MS-Vid2Vid-XL text encoder)", key, "present (an OpenCLIP state dict)")
    vocab, width = state["token_embedding.weight"].shape
    return CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=state[
        "transformer.resblocks.0.mlp.c_fc.weight"].shape[0], num_hidden_layers=_text_layers(state) - 1,
        num_attention_heads=width // TEXT_HEAD_WIDTH, max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=width, bos_token_id=vocab - 2,
        eos_token_id=vocab - 1, pad_token_id=0)


def convert_text_encoder(state: State, checkpoint: str = "state dict") -> CLIPTextModel:
    report = classify_text(state)
    report.require_complete(checkpoint, "OpenCLIP (ViT-H-14)")
    converted: State = {}
    for theirs, ours in report.mapped.items():
        targets = ours.split(",")
        parts = state[theirs].chunk(3, dim=0) if len(targets) == 3 else (state[theirs],)
        if len(targets) == 3 and state[theirs].shape[0] % 3:
            raise ConfigError("checkpoint (MS-Vid2Vid-XL text encoder)", f"{theirs} {tuple(state[theirs].shape)}",
                              "a fused q, k, v projection (3 x width rows)")
        converted.update({t: p.contiguous() for t, p in zip(targets, parts)})
    # Built for real (not on meta): CLIP's position ids are a non-persistent buffer.
    model = CLIPTextModel(text_config(state))
    return load_strict(model, converted, "MS-Vid2Vid-XL text encoder")


CONVERTERS: dict[str, tuple[Callable[[State], KeyReport], Callable[[State, str], torch.nn.Module]]] = {
    "unet": (classify_unet, convert_unet), "vae": (classify_vae, convert_vae),
    "text_encoder": (classify_text, convert_text_encoder)}

