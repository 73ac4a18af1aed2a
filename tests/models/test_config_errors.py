"""Bad configurations fail at construction with the field and the allowed values named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.cam import CAMConfig
from models.errors import ConfigError
from models.presets import TINY, VideoConfig
from models.schedule import NoiseSchedule
from models.streaming_t2v import StreamingT2V
from models.video_ldm import VideoLDM


def test_cond_frames_must_be_fewer_than_chunk_frames():
    preset = replace(TINY, cam=replace(TINY.cam, cond_frames=17))
    with pytest.raises(ConfigError, match=r"cam\.cond_frames=17: must be an integer in \[1, 15\]"):
        StreamingT2V.from_preset(preset)
    preset = replace(TINY, cam=replace(TINY.cam, cond_frames=16))
    with pytest.raises(ConfigError, match=r"cam\.cond_frames=16"):
        StreamingT2V.from_preset(preset)


@pytest.mark.parametrize("field,value", [("height", 68), ("width", 36), ("height", 63)])
def test_frame_sizes_must_fit_every_downsampling_block(field, value):
    preset = replace(TINY, video=replace(TINY.video, **{field: value}))
    with pytest.raises(ConfigError, match=rf"{field}={value}: must be a multiple of 8 \(VAE x4, UNet x2\)"):
        VideoLDM.from_preset(preset)


def test_frame_encoder_must_downsample_like_the_vae():
    preset = replace(TINY, cam=CAMConfig(frame_encoder_channels=(8, 16), attention_head_dim=8))
    with pytest.raises(ConfigError, match=r"cam\.frame_encoder_channels=\(8, 16\): must be 3 widths"):
        StreamingT2V.from_preset(preset)


@pytest.mark.parametrize("kwargs,match", [
    ({"frames_per_chunk": 1}, r"frames_per_chunk=1: must be an integer >= 2"),
    ({"height": 4}, r"height=4: must be an integer >= 8"),
])
def test_video_config_ranges(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VideoConfig(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_inference_steps": 0}, r"num_inference_steps=0: must be an integer in \[1, 1000\]"),
    ({"eta": 1.5}, r"eta=1.5: must be a number in \[0, 1\]"),
    ({"beta_schedule": "cosine"}, r"beta_schedule='cosine': must be one of 'linear', 'scaled_linear'"),
    ({"beta_start": 0.02}, r"beta_start/beta_end=\(0.02, 0.012\)"),
])
def test_schedule_ranges(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        NoiseSchedule(**kwargs)


def test_config_errors_survive_pickling_across_processes():
    import pickle

    from models.errors import ConfigError

    err = pickle.loads(pickle.dumps(ConfigError("init", "/models/x", "an existing model directory")))
    assert (err.field, err.value, str(err)) == ("init", "/models/x", "init='/models/x': must be an existing model directory")
