"""MP4 encoding: the same frames give the same bytes (resume and re-runs rely on it)."""

from __future__ import annotations

import numpy as np
import pytest

from infra import storage
from infra.video_io import first_frame, probe, read_video, write_mp4


def _frames(h: int, w: int) -> np.ndarray:
    """A smooth coloured pattern panning right, with a little noise (so x264 has work to do)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 2, (12, h, w, 3))
    video = [np.stack([np.sin((x - 2 * t) / 7), np.cos(y / 9), np.sin((x + y - 2 * t) / 11)], -1) for t in range(12)]
    return np.clip(127.5 + 100 * np.stack(video) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(80, 80), (64, 96), (80, 112), (64, 128)])
def test_the_same_frames_encode_to_the_same_bytes_at_their_own_size(tmp_path, size):
    """Widths that are not a multiple of 128 used to encode differently from call to call."""
    frames = _frames(*size)
    uris = [str(tmp_path / f"{i}.mp4") for i in range(4)]
    for uri in uris:
        write_mp4(frames, uri, fps=8)
    first = storage.read_bytes(uris[0])
    assert [storage.read_bytes(u) == first for u in uris[1:]] == [True, True, True]
    decoded = read_video(uris[0])
    assert decoded.shape == frames.shape and probe(uris[0])["width"] == size[1]
    assert np.abs(decoded.astype(int) - frames).mean() < 5  # lossy, but the same picture


def test_the_first_frame_is_the_first_frame_of_the_whole_read(tmp_path):
    uri = str(tmp_path / "v.mp4")
    write_mp4(_frames(64, 96), uri, fps=8)
    assert np.array_equal(first_frame(uri), read_video(uri)[0])
