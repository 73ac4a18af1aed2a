"""Does a generated toy-world video keep its object and move it as captioned?

A good long toy video keeps its object, moves it continuously and shows no hard cuts. SCuts
measure the cuts; this module measures the other two from the caption alone:
the captioned object is the set of pixels near its colour (:data:`toyworld.scenes.COLOURS`), its
position is their centroid, taken as a circular mean because the toy world wraps around (an
object leaving on the right comes back on the left), and its motion is the centroid's step from
frame to frame on that torus, projected on the captioned direction.

* ``presence``: fraction of frames that show the object;
* ``speed_along``: median step along the captioned direction, in frame widths per second, over
  consecutive frames that both show it (the training clips move at
  :data:`toyworld.scenes.SPEED_RANGE`; 0 is a standing object, negative the wrong way);
* ``along_fraction``: fraction of the video's 16-frame windows (those where the object shows in
  most frames) whose net displacement points the captioned way: continuous motion keeps it near
  1, an object that stalls or jitters in place brings it toward 0.5 or below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import require
from toyworld.scenes import COLOURS, DIRECTIONS, scene_for_caption

COLOUR_TOLERANCE = 80.0  # RGB distance within which a pixel counts as the object's colour
MIN_PIXELS = 3  # fewer matching pixels: the object is not in the frame
WINDOW = 16  # frames per window of ``along_fraction`` (one chunk)


def colour_distance(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(H, W) RGB distance of each pixel of ``frame`` (H, W, 3) from ``colour``."""
    return np.linalg.norm(frame.astype(float) - np.array(colour, float), axis=-1)


def centroid(frame: np.ndarray, colour: tuple[int, int, int], tolerance: float = COLOUR_TOLERANCE) -> np.ndarray | None:
    """(x, y) in pixels of the pixels of ``frame`` (H, W, 3) within ``tolerance`` of ``colour``
    (weighted by how close they are), as a circular mean over the wrapping frame, or None when
    fewer than :data:`MIN_PIXELS` match."""
    distance = colour_distance(frame, colour)
    if (distance < tolerance).sum() < MIN_PIXELS:
        return None
    mask = np.clip(1 - distance / tolerance, 0, 1)  # soft edges weigh less: a sub-pixel position
    h, w = mask.shape
    phase = lambda n: np.exp(2j * np.pi * (np.arange(n) + 0.5) / n)  # noqa: E731
    x = np.angle((mask.sum(0) * phase(w)).sum()) % (2 * np.pi) / (2 * np.pi) * w
    y = np.angle((mask.sum(1) * phase(h)).sum()) % (2 * np.pi) / (2 * np.pi) * h
    return np.array([x, y])


def largest_blob(frame: np.ndarray, colour: tuple[int, int, int], tolerance: float = COLOUR_TOLERANCE) -> float:
    """Share of the pixels of ``frame`` (H, W, 3) in its largest region of pixels within
    ``tolerance`` of ``colour``, 8-connected across the wrapping edges (an object leaving one edge
    shows at the opposite one). Scattered specks of the colour in a texture make small regions;
    an object makes one region of its area."""
    import cv2

    mask = (colour_distance(frame, colour) < tolerance).astype(np.uint8)
    if not mask.any():
        return 0.0
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    parent = np.arange(count)

    def root(label: int) -> int:
        while parent[label] != label:
            label = parent[label]
        return int(label)
    for first, last in ((labels[0], labels[-1]), (labels[:, 0], labels[:, -1])):  # the wrapping edges
        for shift in (-1, 0, 1):  # with the diagonal neighbours
            other = np.roll(last, shift)
            touching = (first > 0) & (other > 0)
            for a, b in zip(first[touching], other[touching]):
                parent[root(a)] = root(b)
    roots = np.array([root(label) for label in range(count)])
    areas = np.bincount(roots[labels[labels > 0]], minlength=count)
    return float(areas.max()) / mask.size


def torus_step(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The shortest (dx, dy) from ``a`` to ``b`` on a frame of ``size`` (width, height) that wraps."""
    extent = np.array(size, float)
    return (np.asarray(b) - np.asarray(a) + extent / 2) % extent - extent / 2


def torus_distance(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> float:
    return float(np.hypot(*torus_step(a, b, size)))


@dataclass(frozen=True)
class ObjectMotion:
    presence: float
    speed_along: float  # frame widths per second; nan when the object never shows twice in a row
    along_fraction: float  # nan when no window shows the object

    def as_dict(self) -> dict[str, float]:
        return {"presence": self.presence, "speed_along": self.speed_along, "along_fraction": self.along_fraction}


def object_motion(frames: np.ndarray, caption: str, fps: float) -> ObjectMotion:
    """The captioned object's presence and motion in ``frames`` (N, H, W, 3) uint8."""
    require(frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) >= 2, "frames", frames.shape,
            "(N >= 2, H, W, 3) RGB frames")
    require(fps > 0, "fps", fps, "> 0")
    scene = scene_for_caption(caption, np.random.default_rng(0))
    colour, direction = COLOURS[scene.colour], np.array(DIRECTIONS[scene.direction])
    h, w = frames.shape[1:3]
    positions = [centroid(f, colour) for f in frames]
    present = np.array([p is not None for p in positions])
    extent = np.array([w, h], float)
    steps = np.array([torus_step(a, b, (w, h)) / extent @ direction if a is not None and b is not None else np.nan
                      for a, b in zip(positions[:-1], positions[1:])])  # frame widths (heights) per frame
    moving = steps[~np.isnan(steps)]
    speed = float(np.median(moving)) * fps if len(moving) else float("nan")
    nets = []
    for start in range(0, len(steps) - WINDOW + 2, WINDOW):
        window = steps[start:start + WINDOW - 1]
        if np.isnan(window).mean() <= 0.5:
            nets.append(np.nansum(window))
    along = float(np.mean(np.array(nets) > 0)) if nets else float("nan")
    return ObjectMotion(float(present.mean()), speed, along)
