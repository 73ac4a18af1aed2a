"""CAM (Sec. 4.1, Eq. 4-5): zero-initialised injection, shapes of the temporal attention."""

from __future__ import annotations

import copy

import pytest
import torch

from models.cam import CAMConfig, SkipMerger, skip_channels
from models.streaming_unet import StreamingT2VUNet


def _inputs(model, batch=1, frames=16, cond=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    unet = model.unet.unet
    x = torch.randn(batch, 4, frames, 16, 16, generator=g)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    cond_frames = torch.rand(batch, 3, cond, 64, 64, generator=g) * 2 - 1
    return x, text, cond_frames


@torch.no_grad()
def test_cam_at_init_leaves_base_prediction_unchanged(tiny_streaming):
    x, text, cond = _inputs(tiny_streaming)
    base = tiny_streaming.unet.unet
    # The base UNet3D alone (diffusers forward) vs our forward with CAM features injected.
    expected = base(x, 500, text).sample
    got = tiny_streaming.unet(x, 500, text, cond_frames=cond)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_frame_encoding_computed_once_per_chunk_gives_the_same_prediction(tiny_streaming):
    """E_cond reads the conditioning frames only, so sampling encodes them once per chunk and
    reuses the encoding at every step and in every guidance branch."""
    from models.cam import EncodedFrames
    from models.streaming_t2v import repeat_condition

    model = copy.deepcopy(tiny_streaming.unet)
    for module in (*[m.proj_out for m in model.cam.mergers], model.cam.control.frame_encoder.conv_out):
        torch.nn.init.normal_(module.weight, std=0.1)
    x, text, cond = _inputs(tiny_streaming, batch=2)
    encoded = model.cam.encode_frames(cond)
    assert isinstance(encoded, EncodedFrames) and (encoded.batch, encoded.frames) == (2, 8)
    for t in (900, 100):
        torch.testing.assert_close(model(x, t, text, cond_frames=encoded), model(x, t, text, cond_frames=cond),
                                   rtol=0, atol=1e-6)
    two = repeat_condition(encoded, 2)
    torch.testing.assert_close(model(torch.cat([x, x]), 500, torch.cat([text, text]), cond_frames=two),
                               model(torch.cat([x, x]), 500, torch.cat([text, text]), cond_frames=torch.cat([cond] * 2)),
                               rtol=0, atol=1e-6)

    calls = []
    hook = model.cam.control.frame_encoder.register_forward_hook(lambda *a: calls.append(1))
    tiny_streaming_copy = copy.copy(tiny_streaming)
    tiny_streaming_copy.unet = model
    tiny_streaming_copy.sample_chunk(["a red circle"], cond[:1, :, 0], cond[:1], [torch.Generator().manual_seed(0)],
                                     num_inference_steps=4)
    hook.remove()
    assert len(calls) == 1


@torch.no_grad()
def test_cam_changes_prediction_once_p_out_is_nonzero(tiny_streaming):
    x, text, cond = _inputs(tiny_streaming)
    model = copy.deepcopy(tiny_streaming.unet)
    before = model(x, 500, text, cond_frames=cond)
    for merger in model.cam.mergers:
        torch.nn.init.normal_(merger.proj_out.weight, std=0.1)
    after = model(x, 500, text, cond_frames=cond)
    assert (after - before).abs().max() > 1e-3
    # E_cond ends in a zero convolution too: the frames' content reaches the UNet only once it
    # is trained (here: perturbed).
    assert torch.equal(model(x, 500, text, cond_frames=-cond), after)
    torch.nn.init.normal_(model.cam.control.frame_encoder.conv_out.weight, std=0.1)
    with_frames = model(x, 500, text, cond_frames=cond)
    assert (model(x, 500, text, cond_frames=-cond) - with_frames).abs().max() > 1e-4


@torch.no_grad()
@pytest.mark.parametrize("cond_frames", [1, 4, 8, 16])
def test_cam_attention_maps_f_queries_onto_f_cond_keys_at_every_skip(tiny_streaming, monkeypatch, cond_frames):
    model = tiny_streaming.unet
    x, text, cond = _inputs(tiny_streaming, batch=2, cond=cond_frames)
    seen = []
    original = SkipMerger.attention_inputs

    def recording(self, skip, cam, frames, k):
        q, key, value = original(self, skip, cam, frames, k)
        seen.append((tuple(skip.shape), tuple(q.shape), tuple(key.shape), tuple(value.shape), self.heads))
        return q, key, value

    monkeypatch.setattr(SkipMerger, "attention_inputs", recording)
    out = model(x, 500, text, cond_frames=cond)
    assert out.shape == x.shape
    channels = skip_channels(model.unet)
    assert len(seen) == len(channels) == len(model.cam.mergers)
    for (skip, q, k, v, heads), c in zip(seen, channels):
        n, _, h, w = skip
        assert n == 2 * 16 and skip[1] == c
        tokens = 2 * h * w  # one attention per (video, pixel)
        assert q == (tokens, heads, 16, c // heads)
        assert k == v == (tokens, heads, cond_frames, c // heads)


def test_cam_rejects_more_condition_frames_than_chunk_frames(tiny_streaming):
    x, text, cond = _inputs(tiny_streaming, frames=8, cond=9)
    with pytest.raises(ValueError, match=r"cond_frames=9: must be <= the chunk's frame count 8"):
        tiny_streaming.unet(x, 500, text, cond_frames=cond)


def test_control_branch_starts_as_a_copy_of_the_unet_encoder(tiny_streaming):
    model = tiny_streaming.unet
    for name in ("conv_in", "time_embedding", "transformer_in", "down_blocks", "mid_block"):
        ours = getattr(model.cam.control, name).state_dict()
        theirs = {k: v for k, v in getattr(model.unet, name).state_dict().items() if ".processor." not in k}
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(torch.count_nonzero(p) == 0 for p in model.cam.control.frame_encoder.conv_out.parameters())


def test_modelscope_cam_has_13_injection_points_with_paper_token_dims():
    from models.presets import MODELSCOPE

    with torch.device("meta"):
        model = StreamingT2VUNet(unet_config=MODELSCOPE.unet, cam_config=MODELSCOPE.cam.__dict__,
                                 apm_config=MODELSCOPE.apm.__dict__)
    dims = [m.proj_in.in_features for m in model.cam.mergers]
    assert len(dims) == 13 and sorted(set(dims)) == [320, 640, 1280]
    assert [m.heads for m in model.cam.mergers] == [d // 64 for d in dims]


def test_cam_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"cam\.cond_frames=0: must be an integer >= 1"):
        CAMConfig(cond_frames=0)


def test_paper_attention_has_no_distance_bias():
    """Without ``frame_distance_bias`` Eq. 4 is the plain attention (the released checkpoint's)."""
    merger = SkipMerger(16, 4, 8)
    assert merger.distance_slope is None and merger.attention_bias(16, 8) is None
    assert "distance_slope" not in dict(merger.named_parameters())


def test_distance_bias_is_minus_slope_times_frame_distance():
    merger = SkipMerger(32, 4, 8, distance_bias=True)
    assert merger.distance_slope.shape == (4,) and merger.distance_slope.requires_grad
    bias = merger.attention_bias(16, 8)
    assert bias.shape == (1, 4, 16, 8)
    j, i = torch.meshgrid(torch.arange(16.0), torch.arange(8.0), indexing="ij")
    for h in range(4):
        torch.testing.assert_close(bias[0, h], -merger.distance_slope[h].detach() * (j - i).abs())
    # Every head starts out preferring nearer frames, the steepest with slope 1.
    assert merger.distance_slope[0] == 1 and torch.all(merger.distance_slope > 0)
    assert torch.all(merger.distance_slope[1:] < merger.distance_slope[:-1])


@torch.no_grad()
def test_distance_bias_sends_each_frame_to_the_conditioning_frame_it_continues():
    """With the content term switched off (W_Q = 0) the bias alone decides Eq. 4's weights: a steep
    slope sends chunk frame j to conditioning frame min(j, F_cond - 1), the frame it re-covers or,
    for the new frames, the newest one, so the merger copies that frame's CAM feature."""
    c, frames, cond = 16, 16, 8
    merger = SkipMerger(c, 4, 8, distance_bias=True)
    torch.nn.init.zeros_(merger.to_q.weight)
    for layer in (merger.to_v, merger.to_out, merger.proj_out):
        layer.weight.copy_(torch.eye(c))
        if layer.bias is not None:
            torch.nn.init.zeros_(layer.bias)
    merger.distance_slope.fill_(60.0)
    g = torch.Generator().manual_seed(0)
    skip = torch.randn(frames, c, 2, 3, generator=g)
    cam = torch.randn(cond, c, 2, 3, generator=g)
    added = merger(skip, cam, frames, cond) - skip
    for j in range(frames):
        torch.testing.assert_close(added[j], cam[min(j, cond - 1)], rtol=0, atol=1e-5)


@torch.no_grad()
def test_distance_bias_keeps_cam_a_no_op_at_initialisation(tiny_video_ldm):
    """P_out starts at zero, so CAM with the bias still leaves the base Video-LDM unchanged; the
    bias changes CAM's output only through its attention, once P_out is trained."""
    from dataclasses import replace

    from models.presets import TINY

    on = StreamingT2VUNet.from_base(tiny_video_ldm.unet, replace(TINY.cam, frame_distance_bias=True), TINY.apm)
    off = StreamingT2VUNet.from_base(tiny_video_ldm.unet, replace(TINY.cam, frame_distance_bias=False), TINY.apm)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 16, 16, 16, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    cond = torch.rand(1, 3, 8, 64, 64, generator=g) * 2 - 1
    base = tiny_video_ldm.unet(x, 500, text).sample
    torch.testing.assert_close(on(x, 500, text, cond_frames=cond), base, rtol=0, atol=1e-6)
    for a, b in zip(on.cam.mergers, off.cam.mergers):
        torch.nn.init.normal_(a.proj_out.weight, std=0.1)
        b.proj_out.weight.copy_(a.proj_out.weight)
    torch.nn.init.normal_(on.cam.control.frame_encoder.conv_out.weight, std=0.1)
    off.cam.control.frame_encoder.conv_out.weight.copy_(on.cam.control.frame_encoder.conv_out.weight)
    assert (on(x, 500, text, cond_frames=cond) - off(x, 500, text, cond_frames=cond)).abs().max() > 1e-4


def _text_free(base, image_encoder):
    """The tiny StreamingT2V with a text-free control branch (control_text='empty'), built as
    training's stage cam builds it."""
    from dataclasses import replace

    from models.presets import TINY
    from models.streaming_t2v import StreamingT2V

    return StreamingT2V.from_video_ldm(base, image_encoder, replace(TINY.cam, control_text="empty"), TINY.apm)


@torch.no_grad()
def test_text_free_control_branch_reads_the_empty_prompt_whatever_the_prompt(tiny_streaming, tiny_video_ldm):
    """control_text='empty': the control branch's features are those of the empty prompt's
    encoding for every prompt, so the guidance branches of Eq. 13 get the same CAM features;
    the paper's branch ('prompt') reads each prompt."""
    model = _text_free(tiny_video_ldm, tiny_streaming.image_encoder)
    cam = model.unet.cam
    empty = model.encode_prompt([""])
    torch.testing.assert_close(cam.empty_text, empty, rtol=0, atol=0)
    x, _, cond = _inputs(tiny_streaming, batch=2)
    text = model.encode_prompt(["a red circle moving left", "a blue square moving up"])
    t = torch.tensor([500, 500])
    got = cam.features(x, t, text, cond)
    for a, b in zip(got, cam.features(x, t, torch.zeros_like(text), cond)):
        assert torch.equal(a, b)
    for a, b in zip(got, cam.control(x[:, :, :8], t, torch.cat([empty, empty]), cond)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    paper = tiny_streaming.unet.cam
    assert paper.config.control_text == "prompt"
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(paper.features(x, t, text, cond),
                                                         paper.features(x, t, torch.zeros_like(text), cond)))


@torch.no_grad()
def test_text_free_control_branch_keeps_cam_a_no_op_at_initialisation(tiny_streaming, tiny_video_ldm):
    model = _text_free(tiny_video_ldm, tiny_streaming.image_encoder)
    x, text, cond = _inputs(tiny_streaming)
    expected = tiny_video_ldm.unet(x, 500, text).sample
    torch.testing.assert_close(model.unet(x, 500, text, cond_frames=cond), expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_text_free_control_branch_survives_save_and_load(tiny_streaming, tiny_video_ldm, tmp_path):
    """The setting is in the saved UNet config; the empty prompt's encoding is not saved (a
    non-persistent buffer) but recomputed from the loaded text encoder."""
    from models.streaming_t2v import StreamingT2V

    model = _text_free(tiny_video_ldm, tiny_streaming.image_encoder)
    for module in (*[m.proj_out for m in model.unet.cam.mergers], model.unet.cam.control.frame_encoder.conv_out):
        torch.nn.init.normal_(module.weight, std=0.1)  # "trained": CAM contributes
    model.save_pretrained(tmp_path)
    assert not any("empty_text" in k for k in model.unet.state_dict())
    loaded = StreamingT2V.from_pretrained(tmp_path)
    assert loaded.unet.cam.config.control_text == "empty"
    torch.testing.assert_close(loaded.unet.cam.empty_text, model.unet.cam.empty_text, rtol=0, atol=0)
    x, text, cond = _inputs(tiny_streaming)
    torch.testing.assert_close(loaded.unet(x, 500, text, cond_frames=cond), model.unet(x, 500, text, cond_frames=cond),
                               rtol=0, atol=1e-5)


def test_control_text_errors_name_the_field(tiny_streaming, tiny_video_ldm):
    from dataclasses import replace

    from models.presets import TINY

    with pytest.raises(ValueError, match=r"cam\.control_text='none': must be one of \('prompt', 'empty'\)"):
        CAMConfig(control_text="none")
    bare = StreamingT2VUNet.from_base(tiny_video_ldm.unet, replace(TINY.cam, control_text="empty"), TINY.apm)
    x, text, cond = _inputs(tiny_streaming)
    with pytest.raises(ValueError, match=r"cam\.empty_text=None: must be the empty prompt's encoding"):
        bare(x, 500, text, cond_frames=cond)
