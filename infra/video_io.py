"""Video files: H.264 MP4 through PyAV, written atomically to any fsspec URI."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from infra import storage


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, N, H, W) or (1, 3, N, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    if frames.dim() == 5:
        frames = frames[0]
    x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (1, 3, N, H, W) float in [-1, 1] (inverse of :func:`to_uint8` up to rounding)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
    return x.permute(3, 0, 1, 2)[None]


ENCODER_THREADS = 4
"""Fixed: libx264's output depends on its thread count, so "auto" would make the bytes depend on
the node's core count."""

ROW_ALIGN = 128
"""Encoded width multiple: FFmpeg pads plane rows to 32 or 64 bytes (by CPU), and libx264 reads
that uninitialised padding; with a chroma row a multiple of 64 bytes there is none."""


def write_mp4(frames: np.ndarray, uri: str, fps: int = 10, crf: int = 18) -> None:
    """Encode (N, H, W, 3) uint8 frames as H.264 (yuv420p) at ``fps``; even sizes are required.

    The same frames give the same file on any node, so that a resumed or re-run video is
    byte-identical to an uninterrupted one. Without care, at widths such as 80 and 96 the same
    frames encode to different bytes from one call to the next, because libx264 reads
    uninitialised row padding. So the picture is widened to a multiple of :data:`ROW_ALIGN` by
    repeating its last column, and the H.264 stream crops it back (SPS cropping, ``crop-rect``):
    decoders show exactly W x H. 720p (1280 wide) needs no widening.
    """
    n, h, w, _ = frames.shape
    pad = -w % ROW_ALIGN
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "video.mp4"
        with av.open(str(local), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = w + pad, h, "yuv420p"
            stream.options = {"crf": str(crf), "threads": str(ENCODER_THREADS),
                              "x264-params": f"crop-rect=0,0,{pad},0"}
            for frame in frames:
                wide = np.pad(frame, ((0, 0), (0, pad), (0, 0)), mode="edge") if pad else np.ascontiguousarray(frame)
                for packet in stream.encode(av.VideoFrame.from_ndarray(wide, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        storage.write_file(uri, local)


def read_video(uri: str) -> np.ndarray:
    """All frames of a video file as (N, H, W, 3) uint8."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f, av.open(f) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def first_frame(uri: str) -> np.ndarray:
    """The first frame of a video file as (H, W, 3) uint8, decoding nothing after it."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f, av.open(f) as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{uri} has no video frames")


def probe(uri: str) -> dict:
    """Frame count, size, codec and frame rate of a video file (decoding every frame to count)."""
    frames = read_video(uri)
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f, av.open(f) as container:
        s = container.streams.video[0]
        return {"frames": len(frames), "height": frames.shape[1], "width": frames.shape[2],
                "codec": s.codec_context.name, "fps": float(s.average_rate)}
