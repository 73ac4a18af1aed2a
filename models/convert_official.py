"""Convert the officially released StreamingT2V checkpoint (``streaming_t2v.ckpt``, PyTorch
Lightning, ModelScope version) into a :class:`~models.streaming_t2v.StreamingT2V` directory.

The released file holds the whole training module under ``state_dict``; its layout (read from the
authors' public code) maps onto ours as follows. ``N`` is the number of skip connections (12 for
ModelScope); ``...attn2`` is any spatial cross-attention of the main UNet.

=====================================================================  ==============================================
official key                                                           ours (inside ``unet/`` = StreamingT2VUNet)
=====================================================================  ==============================================
``base_model.cross_attention_merger_down_blocks.{i}.temporal_transformer.{norm,proj_in,proj_out}``  ``cam.mergers.{i}.{norm,proj_in,proj_out}``
``base_model.cross_attention_merger_down_blocks.{i}.temporal_transformer.attention.to_{q,k,v}``     ``cam.mergers.{i}.to_{q,k,v}``
``base_model.cross_attention_merger_down_blocks.{i}.temporal_transformer.attention.to_out.0``       ``cam.mergers.{i}.to_out``
``base_model.cross_attention_merger_mid_block.temporal_transformer.*``  ``cam.mergers.{N}.*`` (same rules)
``base_model.<...attn2>.conv``                                         ``unet.<...attn2>.processor.mixer.conv``
``base_model.<...attn2>.conv_ln``                                      ``unet.<...attn2>.processor.mixer.norm``
``base_model.<...attn2>.alpha``                                        ``unet.<...attn2>.processor.alpha``
``base_model.<any other key>``                                         ``unet.<same key>``
``unet.controlnet_cond_embedding.conv_in``                             ``cam.control.frame_encoder.body.0``
``unet.controlnet_cond_embedding.blocks.{j}``                          ``cam.control.frame_encoder.body.{2j + 2}``
``unet.controlnet_cond_embedding.conv_out``                            ``cam.control.frame_encoder.conv_out``
``unet.{conv_in,time_embedding,transformer_in,down_blocks,mid_block}.*``  ``cam.control.<same key>``
``resampler.context_embedding.{0,2}``                                  ``apm.resampler.mlp.{0,2}``
``image_encoder.model.visual.*`` (OpenCLIP ViT-H/14)                  ``image_encoder/`` (transformers CLIP vision, table below)
``image_encoder.model.{token_embedding,positional_embedding,ln_final,text_projection,logit_scale}``  dropped (unused text tower)
``vae.*``, ``text_encoder.*``                                          taken from the base Video-LDM (frozen in training)
=====================================================================  ==============================================

Every other key (another ``unet.*`` part, such as the zero convolutions of another ControlNet
mode, or another prefix) is refused with its name, as is any reshape other than Linear <-> 1x1
convolution (:mod:`models.key_mapping`); ``streamingt2v convert-official --list-dropped`` lists
the keys a checkpoint would not convert.

OpenCLIP visual tower -> transformers ``CLIPVisionModelWithProjection``: ``conv1`` ->
``embeddings.patch_embedding``, ``class_embedding`` -> ``embeddings.class_embedding``,
``positional_embedding`` -> ``embeddings.position_embedding.weight``, ``ln_pre`` -> ``pre_layrnorm``,
``transformer.resblocks.{i}.ln_1/ln_2`` -> ``encoder.layers.{i}.layer_norm1/2``,
``attn.in_proj_{weight,bias}`` -> split into ``self_attn.{q,k,v}_proj``, ``attn.out_proj`` ->
``self_attn.out_proj``, ``mlp.c_fc/c_proj`` -> ``mlp.fc1/fc2``, ``ln_post`` -> ``post_layernorm``,
``proj`` (in x out) -> ``visual_projection.weight`` (transposed); all under ``vision_model.``
except the projection.

The released model uses the reference layout (:func:`models.presets.reference_variant`): E_cond
without norms and one Conv1d + LayerNorm token mixer per cross-attention layer.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from models.errors import ConfigError
from models.key_mapping import KeyReport, load_strict
from models.presets import ModelPreset, reference_variant
from models.streaming_t2v import StreamingT2V
from models.streaming_unet import StreamingT2VUNet
from models.video_ldm import VideoLDM

_CONTROL_PARTS = ("conv_in.", "time_embedding.", "transformer_in.", "down_blocks.", "mid_block.")
_MERGER_PARTS = {"norm": "norm", "proj_in": "proj_in", "proj_out": "proj_out", "attention.to_q": "to_q",
                 "attention.to_k": "to_k", "attention.to_v": "to_v", "attention.to_out.0": "to_out"}
_DROPPED_IMAGE_KEYS = ("token_embedding", "positional_embedding", "ln_final", "text_projection", "logit_scale")
_FROM_BASE = ("vae.", "text_encoder.")


def _merger_key(rest: str, index: int) -> str:
    for theirs, ours in _MERGER_PARTS.items():
        if rest.startswith(theirs + "."):
            return f"cam.mergers.{index}.{ours}{rest[len(theirs):]}"
    raise KeyError(rest)


def map_unet_key(key: str, num_skips: int) -> str | None:
    """Our StreamingT2VUNet key for an official key, or None for keys of other components."""
    if key.startswith("base_model."):
        rest = key[len("base_model."):]
        m = re.match(r"cross_attention_merger_down_blocks\.(\d+)\.temporal_transformer\.(.+)", rest)
        if m:
            return _merger_key(m.group(2), int(m.group(1)))
        m = re.match(r"cross_attention_merger_mid_block\.temporal_transformer\.(.+)", rest)
        if m:
            return _merger_key(m.group(1), num_skips)
        m = re.match(r"(.+\.attn2)\.(conv|conv_ln|alpha)((?:\..+)?)$", rest)
        if m:
            target = {"conv": "processor.mixer.conv", "conv_ln": "processor.mixer.norm", "alpha": "processor.alpha"}
            return f"unet.{m.group(1)}.{target[m.group(2)]}{m.group(3)}"
        return "unet." + rest
    if key.startswith("unet.controlnet_cond_embedding."):
        rest = key[len("unet.controlnet_cond_embedding."):]
        m = re.match(r"blocks\.(\d+)\.(.+)", rest)
        if m:
            return f"cam.control.frame_encoder.body.{2 * int(m.group(1)) + 2}.{m.group(2)}"
        if rest.startswith("conv_in."):
            return "cam.control.frame_encoder.body.0." + rest[len("conv_in."):]
        return "cam.control.frame_encoder." + rest
    if key.startswith("unet."):
        rest = key[len("unet."):]
        return "cam.control." + rest if rest.startswith(_CONTROL_PARTS) else None
    if key.startswith("resampler.context_embedding."):
        return "apm.resampler.mlp." + key[len("resampler.context_embedding."):]
    return None


def openclip_visual_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP ``visual.*`` weights (prefix already stripped) -> CLIPVisionModelWithProjection keys."""
    out: dict[str, torch.Tensor] = {}
    v = "vision_model."
    simple = {"class_embedding": "embeddings.class_embedding", "conv1.weight": "embeddings.patch_embedding.weight",
              "positional_embedding": "embeddings.position_embedding.weight"}
    for key, value in state.items():
        if key in simple:
            out[v + simple[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key.startswith(("ln_pre.", "ln_post.")):
            name = "pre_layrnorm" if key.startswith("ln_pre.") else "post_layernorm"
            out[f"{v}{name}.{key.split('.', 1)[1]}"] = value
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)", key):
            layer, rest = f"{v}encoder.layers.{m.group(1)}.", m.group(2)
            if rest.startswith("attn.in_proj_"):
                kind = rest[len("attn.in_proj_"):]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{name}.{kind}"] = part.contiguous()
            else:
                for theirs, ours in (("attn.out_proj.", "self_attn.out_proj."), ("ln_1.", "layer_norm1."),
                                     ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
                    if rest.startswith(theirs):
                        out[layer + ours + rest[len(theirs):]] = value
                        break
                else:
                    raise KeyError(f"visual.{key}")
        else:
            raise KeyError(f"visual.{key}")
    return out


def load_lightning_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """``state_dict`` of a Lightning checkpoint, memory-mapped; optimizer states are ignored.
    Unpickling arbitrary objects is refused unless ``trust_pickle``."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
    except Exception as exc:  # torch raises UnpicklingError subclasses for non-tensor objects
        if trust_pickle:
            raise
        raise ConfigError("checkpoint", str(path), "loadable with weights_only=True; pass trust_pickle=True "
                          f"(--trust-pickle) only for a file you trust ({type(exc).__name__})") from exc
    return ckpt.get("state_dict", ckpt)


def classify_keys(state: dict[str, torch.Tensor], num_skips: int) -> KeyReport:
    """Where each official key goes: our UNet or image-encoder key, dropped (with the reason) or
    unrecognised."""
    report = KeyReport()
    for key in state:
        if key.startswith("image_encoder.model.visual."):
            report.mapped[key] = "image_encoder/" + key[len("image_encoder.model.visual."):]
        elif key.startswith("image_encoder.model.") and key[len("image_encoder.model."):].split(".")[0] in _DROPPED_IMAGE_KEYS:
            report.dropped[key] = "OpenCLIP text-tower leftover (APM uses the visual tower)"
        elif key.startswith(_FROM_BASE):
            report.dropped[key] = "taken from the base Video-LDM (frozen in training)"
        elif (ours := map_unet_key(key, num_skips)) is not None:
            report.mapped[key] = ours
        else:
            report.unrecognised.append(key)
    return report


def convert_state_dict(state: dict[str, torch.Tensor], unet: StreamingT2VUNet, checkpoint: str = "state dict"
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(StreamingT2VUNet state dict, transformers CLIP vision state dict) from an official one;
    a ConfigError naming them for unrecognised keys (shapes are checked as they load)."""
    report = classify_keys(state, len(unet.cam.mergers) - 1)
    report.require_complete(checkpoint, "the released StreamingT2V")
    unet_state: dict[str, torch.Tensor] = {}
    visual: dict[str, torch.Tensor] = {}
    for key, ours in report.mapped.items():
        if ours.startswith("image_encoder/"):
            visual[ours[len("image_encoder/"):]] = state[key]
        else:
            unet_state[ours] = state[key]
    try:
        image_state = openclip_visual_to_transformers(visual)
    except KeyError as exc:
        raise ConfigError("checkpoint", checkpoint, f"a checkpoint of the released StreamingT2V whose every key is "
                          f"known; unrecognised: image_encoder.model.{exc.args[0]}") from None
    return unet_state, image_state


def list_dropped(checkpoint: str | Path, trust_pickle: bool = False) -> KeyReport:
    """The key report of a released checkpoint, without building a model (which keys are dropped
    or unrecognised does not depend on the number of skip connections)."""
    state = load_lightning_state_dict(checkpoint, trust_pickle)
    skips = {m.group(1) for k in state if (m := re.match(r"base_model\.cross_attention_merger_down_blocks\.(\d+)\.", k))}
    return classify_keys(state, len(skips))


def _reference_unet(base: VideoLDM, preset: ModelPreset) -> StreamingT2VUNet:
    layout = reference_variant(preset)
    # Built for real (not on meta): non-persistent buffers such as CLIP's position ids must exist.
    return StreamingT2VUNet(unet_config=dict(base.unet.config), cam_config=asdict(layout.cam),
                            apm_config=asdict(layout.apm))


def convert_official(checkpoint: str | Path, base: VideoLDM, preset: ModelPreset,
                     trust_pickle: bool = False, torch_dtype: torch.dtype | None = None) -> StreamingT2V:
    """Build a StreamingT2V from the released checkpoint and the base Video-LDM (for the VAE,
    text encoder and tokenizer, which were frozen in training)."""
    state = load_lightning_state_dict(checkpoint, trust_pickle)
    unet = _reference_unet(base, preset)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**reference_variant(preset).image_encoder))
    unet_state, image_state = convert_state_dict(state, unet, str(checkpoint))
    load_strict(unet, unet_state, "StreamingT2V UNet")
    load_strict(image_encoder, image_state, "image encoder")
    if torch_dtype is not None:
        unet.to(torch_dtype)
        image_encoder.to(torch_dtype)
    return StreamingT2V(unet.eval(), base.vae, base.text_encoder, base.tokenizer, image_encoder.eval(),
                        base.video, base.schedule)

