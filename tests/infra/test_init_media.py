"""A user's clip or image that starts a video: staged by content, refused clearly when unusable,
and fitted to the preset's frame by scaling and centre-cropping."""

from __future__ import annotations

import numpy as np
import pytest

from infra.init_media import load_frames, stage_request, staged_uri
from infra.video_io import write_mp4
from models.errors import ConfigError
from models.request import GenerationRequest


def _clip(n: int = 12) -> np.ndarray:
    frames = np.full((n, 48, 96, 3), 100, np.uint8)
    frames[:, :, :24] = (0, 200, 0)  # side bands that a centre crop to a square removes
    frames[:, :, 72:] = (0, 0, 200)
    for i in range(n):
        frames[i, 16:32, 30 + 2 * i:46 + 2 * i] = (220, 30, 30)
    return frames


@pytest.fixture()
def clip(tmp_path):
    write_mp4(_clip(), str(tmp_path / "clip.mp4"), 10)
    return tmp_path / "clip.mp4"


def test_a_clip_is_staged_by_content_and_its_length_fixed(clip, tmp_path):
    copy = tmp_path / "elsewhere.mp4"
    copy.write_bytes(clip.read_bytes())
    out = str(tmp_path / "out")
    a = stage_request(GenerationRequest("a red square", init_video=str(clip), num_frames=40), out)
    b = stage_request(GenerationRequest("a red square", init_video=str(copy), num_frames=40), out)
    assert a == b and a.video_id == b.video_id and a.init_frames == 12
    assert a.init_video.startswith("sha256:") and a.init_video.endswith(".mp4")
    assert (tmp_path / "out" / "inputs" / a.init_video[len("sha256:"):]).read_bytes() == clip.read_bytes()
    assert stage_request(a, out) == a  # staged already: unchanged
    uploaded = GenerationRequest("a red square", init_video=a.init_video, num_frames=40)  # a ref, no length
    assert uploaded.init_frames == 0 and stage_request(uploaded, out) == a
    trimmed = stage_request(GenerationRequest("a red square", init_video=str(clip), init_frames=5, num_frames=40), out)
    assert trimmed.init_frames == 5 and trimmed.video_id != a.video_id
    assert GenerationRequest("a red square", num_frames=40).video_id != a.video_id


@pytest.mark.parametrize("field,value,allowed", [
    ("init_video", "missing.mp4", "an existing file"),
    ("init_video", "notes.txt", "a file ending in one of"),
    ("init_image", "missing.png", "an existing file"),
    ("init_video", "http://example.com/a.mp4", "a local path or a URI of s3://"),
])
def test_an_unusable_start_is_refused_by_field(tmp_path, field, value, allowed):
    if value == "notes.txt":
        (tmp_path / value).write_text("hello")
    source = value if "://" in value else str(tmp_path / value)
    with pytest.raises(ConfigError, match=rf"^{field}=.*must be {allowed}"):
        stage_request(GenerationRequest("x", num_frames=40, **{field: source}), str(tmp_path / "out"))


def test_an_unreadable_video_and_too_many_frames_are_refused(clip, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(ConfigError, match=r"^init_video=.*must be a readable video"):
        stage_request(GenerationRequest("x", init_video=str(tmp_path / "broken.mp4"), num_frames=40), str(tmp_path))
    with pytest.raises(ConfigError, match=r"^init_frames=20: must be at most the 12 frames of init_video"):
        stage_request(GenerationRequest("x", init_video=str(clip), init_frames=20, num_frames=40), str(tmp_path))


def test_frames_are_scaled_to_cover_and_centre_cropped(clip, tmp_path):
    out = str(tmp_path / "out")
    request = stage_request(GenerationRequest("x", init_video=str(clip), num_frames=40), out)
    frames = load_frames(staged_uri(out, request.init_video), 12, 64, 64)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    # 48x96 scaled to 64x128, the middle 64 columns kept: the side bands are gone, the square stays
    assert np.abs(frames[:, :, :4].astype(int) - (100, 100, 100)).max() < 12
    assert frames[0, 32, 10:28, 0].min() > 180  # at (16..32, 30..46) of 48x96: (21..43, 8..29) after the crop
