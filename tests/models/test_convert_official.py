"""The official-checkpoint converter, on a synthetic Lightning checkpoint with the released key
structure (the real file is 25.6 GB and never downloaded in tests)."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from models.apm import APMAttnProcessor
from models.convert_official import convert_official
from models.errors import ConfigError
from models.presets import TINY, reference_variant
from models.seeding import stream
from models.streaming_t2v import StreamingT2V
from models.video_ldm import VideoLDM


def _official_unet_keys(ours: str, num_skips: int) -> str:
    """Our key -> the released name, written from the reference layout (independently of the
    converter's own table)."""
    if m := re.match(r"cam\.mergers\.(\d+)\.(.+)", ours):
        index, rest = int(m.group(1)), m.group(2)
        rest = {"to_q": "attention.to_q", "to_k": "attention.to_k", "to_v": "attention.to_v",
                "to_out": "attention.to_out.0"}.get(rest.split(".")[0], rest.split(".")[0]) + "." + rest.split(".")[1]
        name = "cross_attention_merger_mid_block" if index == num_skips else f"cross_attention_merger_down_blocks.{index}"
        return f"base_model.{name}.temporal_transformer.{rest}"
    if ours.startswith("cam.control.frame_encoder."):
        rest = ours[len("cam.control.frame_encoder."):]
        if m := re.match(r"body\.(\d+)\.(.+)", rest):
            i = int(m.group(1))
            part = "conv_in" if i == 0 else f"blocks.{(i - 2) // 2}"
            return f"unet.controlnet_cond_embedding.{part}.{m.group(2)}"
        return f"unet.controlnet_cond_embedding.{rest}"
    if ours.startswith("cam.control."):
        return "unet." + ours[len("cam.control."):]
    if ours.startswith("apm.resampler.mlp."):
        return "resampler.context_embedding." + ours[len("apm.resampler.mlp."):]
    rest = ours[len("unet."):]
    rest = rest.replace("processor.mixer.conv", "conv").replace("processor.mixer.norm", "conv_ln")
    return "base_model." + rest.replace("processor.alpha", "alpha")


def _openclip_visual(image_encoder) -> dict[str, torch.Tensor]:
    sd = image_encoder.state_dict()
    v = "vision_model."
    out = {"class_embedding": sd[v + "embeddings.class_embedding"],
           "conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
           "positional_embedding": sd[v + "embeddings.position_embedding.weight"],
           "proj": sd["visual_projection.weight"].t().clone()}
    for ln, ours in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for p in ("weight", "bias"):
            out[f"{ln}.{p}"] = sd[f"{v}{ours}.{p}"]
    for i in range(image_encoder.config.num_hidden_layers):
        layer = f"{v}encoder.layers.{i}."
        block = f"transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[block + f"attn.in_proj_{p}"] = torch.cat(
                [sd[layer + f"self_attn.{n}_proj.{p}"] for n in ("q", "k", "v")])
            for theirs, ours in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                                 ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[block + f"{theirs}.{p}"] = sd[layer + f"{ours}.{p}"]
    return out


@pytest.fixture(scope="module")
def released():
    """A 'released' tiny model in the reference layout, with every zero-init part trained."""
    model = StreamingT2V.from_preset(reference_variant(TINY), seed=3)
    torch.manual_seed(5)
    with torch.no_grad():
        for merger in model.unet.cam.mergers:
            torch.nn.init.normal_(merger.proj_out.weight, std=0.05)
        torch.nn.init.normal_(model.unet.cam.control.frame_encoder.conv_out.weight, std=0.05)
        for p in model.unet.unet.attn_processors.values():
            if isinstance(p, APMAttnProcessor):
                p.alpha.fill_(0.4)
    return model


def _lightning_checkpoint(model, path):
    num_skips = len(model.unet.cam.mergers) - 1
    state = {_official_unet_keys(k, num_skips): v.clone() for k, v in model.unet.state_dict().items()}
    state.update({f"image_encoder.model.visual.{k}": v for k, v in _openclip_visual(model.image_encoder).items()})
    state["image_encoder.model.logit_scale"] = torch.tensor(4.6)  # text-tower leftover: dropped
    state["image_encoder.model.token_embedding.weight"] = torch.zeros(3, 2)
    state.update({f"vae.{k}": v for k, v in model.vae.state_dict().items()})
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000}, path)
    return state


def test_converter_reproduces_the_released_model(released, tmp_path):
    state = _lightning_checkpoint(released, tmp_path / "streaming_t2v.ckpt")
    assert any(k.startswith("base_model.cross_attention_merger_mid_block.temporal_transformer.") for k in state)
    assert any(k.endswith("attn2.conv_ln.weight") for k in state)
    base = VideoLDM(released.unet.unet, released.vae, released.text_encoder, released.tokenizer, released.video)
    base = copy.deepcopy(base)

    converted = convert_official(tmp_path / "streaming_t2v.ckpt", base, TINY)
    frames = torch.rand(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    run = lambda m: m.sample_chunk(["a tiger eating raw meat on the street"], frames[:, :, 0],  # noqa: E731
                                   frames[:, :, -8:], [stream(0, "extend", 1)], num_inference_steps=2)
    assert torch.equal(run(converted), run(released))
    converted.save_pretrained(tmp_path / "converted")
    assert torch.equal(run(StreamingT2V.from_pretrained(tmp_path / "converted")), run(released))


def test_converter_rejects_a_checkpoint_with_other_keys(released, tmp_path):
    state = _lightning_checkpoint(released, tmp_path / "bad.ckpt")
    state.pop(next(k for k in state if "cross_attention_merger_down_blocks.0" in k))
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    base = VideoLDM(released.unet.unet, released.vae, released.text_encoder, released.tokenizer, released.video)
    with pytest.raises(ConfigError, match=r"checkpoint \(StreamingT2V UNet\)=.*missing.*cam\.mergers\.0"):
        convert_official(tmp_path / "bad.ckpt", copy.deepcopy(base), TINY)


def _base(released):
    return copy.deepcopy(VideoLDM(released.unet.unet, released.vae, released.text_encoder, released.tokenizer,
                                  released.video))


@pytest.mark.parametrize("extra", ["unet.controlnet_down_blocks.0.weight", "ema.decay"])
def test_converter_refuses_an_unrecognised_key_by_name(released, tmp_path, extra):
    state = _lightning_checkpoint(released, tmp_path / "x.ckpt")
    state[extra] = torch.zeros(4, 4)
    torch.save({"state_dict": state}, tmp_path / "x.ckpt")
    with pytest.raises(ConfigError, match=rf"1 unrecognised: {re.escape(extra)}"):
        convert_official(tmp_path / "x.ckpt", _base(released), TINY)


def test_converter_reshapes_only_the_linear_conv_layout(released, tmp_path):
    state = _lightning_checkpoint(released, tmp_path / "x.ckpt")
    key = next(k for k in state if k.endswith("cross_attention_merger_mid_block.temporal_transformer.proj_in.weight"))
    weight = state[key]
    assert weight.ndim == 2 and weight.shape[0] == weight.shape[1]
    state[key] = weight[:, :, None, None].clone()  # the same matrix as a 1x1 convolution: converted
    torch.save({"state_dict": state}, tmp_path / "conv.ckpt")
    converted = convert_official(tmp_path / "conv.ckpt", _base(released), TINY)
    assert torch.equal(converted.unet.cam.mergers[-1].proj_in.weight, weight)

    state[key] = weight.reshape(weight.shape[0] // 2, weight.shape[1] * 2).clone()  # same size, other tensor
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match=r"1 differ: cam\.mergers\.\d+\.proj_in\.weight"):
        convert_official(tmp_path / "bad.ckpt", _base(released), TINY)


def test_list_dropped_names_every_key_left_out(released, tmp_path, capsys):
    from flows.cli import main
    from models.convert_official import list_dropped

    state = _lightning_checkpoint(released, tmp_path / "x.ckpt")
    state["unet.controlnet_mid_block.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "x.ckpt")
    report = list_dropped(tmp_path / "x.ckpt")
    assert report.unrecognised == ["unet.controlnet_mid_block.weight"]
    assert set(report.dropped) == {k for k in state if k.startswith(("vae.", "image_encoder.model.logit_scale",
                                                                     "image_encoder.model.token_embedding"))}
    assert len(report.mapped) == len(state) - len(report.dropped) - 1

    assert main(["convert-official", str(tmp_path / "x.ckpt"), "--list-dropped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "unrecognised\tunet.controlnet_mid_block.weight" in lines
    assert any(line.startswith("dropped\tvae.") and "base Video-LDM" in line for line in lines)
    assert lines[-1].endswith("1 unrecognised")
    assert main(["convert-official", str(tmp_path / "x.ckpt")]) == 2
    assert "base_model=None: must be given to convert" in capsys.readouterr().err
