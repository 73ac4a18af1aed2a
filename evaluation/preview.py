"""A picture of a video: a PNG strip of evenly spaced frames, the low-resolution video above the
refined one, so that what refinement (Sec. 4.3) kept and added is seen at a glance.

The low-resolution frames are shown at the refined size by pixel repetition (nearest), so their
own pixels are what is seen; each row is labelled with its size, each column with its frame index.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.errors import require

GAP = 4  # pixels between frames
LABEL_WIDTH = 132  # the left column that names each row
HEADER = 18  # the top line (title) and the frame-index line, each
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def frame_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last."""
    require(num_frames >= 1, "frames", num_frames, "a video with at least one frame")
    require(count >= 1, "count", count, "an integer >= 1")
    count = min(count, num_frames)
    return sorted({round(i * (num_frames - 1) / max(1, count - 1)) for i in range(count)})


def _fit(frame: np.ndarray, height: int, width: int) -> Image.Image:
    image = Image.fromarray(frame)
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.NEAREST)


def strip_png(rows: Sequence[tuple[str, np.ndarray]], count: int = 6, title: str = "") -> bytes:
    """PNG bytes of a strip: one row per (label, (N, H, W, 3) uint8 frames), the same ``count``
    frame indices in every row, every frame shown at the largest row's size. Rows shorter than
    the first take their last frame for indices they lack."""
    require(len(rows) >= 1, "rows", len(rows), "at least one video")
    for label, frames in rows:
        require(frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, "frames", label,
                "(N, H, W, 3) uint8 frames")
    height = max(frames.shape[1] for _, frames in rows)
    width = max(frames.shape[2] for _, frames in rows)
    indices = frame_indices(len(rows[0][1]), count)
    font = ImageFont.load_default()
    top = HEADER * (2 if title else 1)
    canvas = Image.new("RGB", (LABEL_WIDTH + len(indices) * (width + GAP), top + len(rows) * (height + GAP)),
                       BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=INK, font=font)
    for column, index in enumerate(indices):
        draw.text((LABEL_WIDTH + column * (width + GAP), top - HEADER + 3), f"frame {index}", fill=INK, font=font)
    for r, (label, frames) in enumerate(rows):
        y = top + r * (height + GAP)
        draw.text((4, y + 3), label, fill=INK, font=font)
        draw.text((4, y + 17), f"{frames.shape[2]}x{frames.shape[1]}, {len(frames)} frames", fill=INK, font=font)
        for column, index in enumerate(indices):
            canvas.paste(_fit(frames[min(index, len(frames) - 1)], height, width),
                         (LABEL_WIDTH + column * (width + GAP), y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def video_preview_png(video: np.ndarray, low_res: np.ndarray | None = None, count: int = 6, title: str = "") -> bytes:
    """The strip of a generated video: its low-res video (when it was refined) above it."""
    rows = [("video", video)] if low_res is None else [("low res", low_res), ("refined", video)]
    return strip_png(rows, count, title)


__all__ = ["frame_indices", "strip_png", "video_preview_png"]
