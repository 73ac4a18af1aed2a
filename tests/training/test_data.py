"""Training data: clips sampled at the target FPS and size, from the toy world or a clip manifest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import storage
from infra.clip_manifest import read_clip_manifest
from models.errors import ConfigError
from toyworld.dataset import write_clip_dataset
from training.data import ClipSource, ClipSpec, resize_crop, source_frame_indices


def test_frames_are_sampled_at_the_target_fps():
    spec = ClipSpec(num_frames=4, fps=3.0, height=8, width=8)
    assert source_frame_indices(1.0, spec, 30.0, 300).tolist() == [30, 40, 50, 60]
    assert source_frame_indices(0.0, spec, 25.0, 300).tolist() == [0, 8, 17, 25]


def test_toy_clips_on_a_wide_canvas_are_the_square_clip_centred_on_black():
    wide = ClipSource("toyworld", ClipSpec(num_frames=3, fps=10.0, height=16, width=24), seed=1)(5)
    square = ClipSource("toyworld", ClipSpec(num_frames=3, fps=10.0, height=16, width=16), seed=1)(5)
    assert wide[1] == square[1] and wide[0].shape == (3, 16, 24, 3)
    assert np.array_equal(wide[0][:, :, 4:20], square[0])
    assert not wide[0][:, :, :4].any() and not wide[0][:, :, 20:].any()


def test_resize_scales_the_shorter_side_and_centre_crops():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle
    out = resize_crop(frames, 20, 20)
    assert out.shape == (2, 20, 20, 3)
    assert out[0, 10, 10, 0] == 255 and out[0, 10, 0, 0] == 0


def test_manifest_clips_are_decoded_at_the_target_geometry(storage_root):
    manifest = write_clip_dataset(storage.join(storage_root, "toy"), num_clips=3, seconds=2.0, fps=30, size=64)
    table = read_clip_manifest(manifest)
    assert table.num_rows == 3 and all(storage.exists(u) for u in table.column("video_uri").to_pylist())
    source = ClipSource(manifest, ClipSpec(num_frames=8, fps=5.0, height=32, width=32), seed=0)
    frames, caption = source(5)
    again, _ = source(5)
    assert frames.shape == (8, 32, 32, 3) and caption in table.column("caption").to_pylist()
    assert np.array_equal(frames, again)


def test_clips_too_short_for_the_spec_are_refused(tmp_path):
    manifest = write_clip_dataset(str(tmp_path), num_clips=1, seconds=1.0, fps=10, size=32)
    with pytest.raises(ConfigError, match="data"):
        ClipSource(manifest, ClipSpec(num_frames=16, fps=3.0, height=32, width=32), seed=0)


def test_a_manifest_without_captions_names_the_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"clip_id": ["a"], "video_uri": ["a.mp4"]}), path)
    with pytest.raises(ConfigError, match="caption"):
        read_clip_manifest(str(path))
