"""The toy world: one coloured shape moving (and maybe spinning) over a textured background.

A :class:`Scene` is a caption plus the continuous parameters that make each clip different
(start position, speed, spin, background colours). :func:`render` draws it at any frame rate and
any length: the world is a torus, so an object moving left leaves on the left edge and comes
back on the right, and a 1200-frame video stays on-caption and continuous. Shapes are drawn
from signed distances with a one-pixel soft edge, so motion is smooth at sub-pixel speeds.

Captions read like "a red square spinning and moving left on a striped background".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.errors import require

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
    "magenta": (210, 50, 200), "cyan": (40, 210, 220), "white": (245, 245, 245), "orange": (245, 140, 30),
}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
BACKGROUNDS = ("striped", "checkered", "dotted", "wavy")
SIZE_RANGE = (0.12, 0.2)  # radius of a sampled object, frame widths
# Muted background tones, far from the object colours so the object stays the salient thing.
BACKGROUND_TONES = ((70, 70, 80), (95, 80, 60), (45, 60, 90), (60, 85, 60), (100, 100, 100), (35, 35, 40))
# Speeds the stream draws, in frame widths per second (the captions do not say how fast).
SPEED_RANGE = (0.12, 0.3)
# Spinning is visible only for shapes without rotational symmetry of a circle.
SPINNABLE = ("square", "triangle", "cross")


@dataclass(frozen=True)
class Scene:
    """What a clip shows. Positions and sizes are in frame widths; time in seconds."""

    shape: str
    colour: str
    direction: str
    background: str
    spinning: bool = False
    speed: float = 0.2  # frame widths per second
    spin: float = 1.0  # radians per second (sign gives the sense), when spinning
    size: float = 0.16  # radius in frame widths
    start: tuple[float, float] = (0.5, 0.5)
    tones: tuple[int, int] = (0, 1)  # indices into BACKGROUND_TONES (dark, light)
    texture_period: float = 0.125  # in frame widths
    texture_angle: float = 0.0

    def __post_init__(self) -> None:
        require(self.shape in SHAPES, "shape", self.shape, f"one of {SHAPES}")
        require(self.colour in COLOURS, "colour", self.colour, f"one of {tuple(COLOURS)}")
        require(self.direction in DIRECTIONS, "direction", self.direction, f"one of {tuple(DIRECTIONS)}")
        require(self.background in BACKGROUNDS, "background", self.background, f"one of {BACKGROUNDS}")
        require(not self.spinning or self.shape in SPINNABLE, "spinning", self.spinning,
                f"False for a {self.shape} (only {SPINNABLE} can visibly spin)")
        require(0 < self.size < 0.5, "size", self.size, "a radius in (0, 0.5) frame widths")

    @property
    def caption(self) -> str:
        motion = f"spinning and moving {self.direction}" if self.spinning else f"moving {self.direction}"
        return f"a {self.colour} {self.shape} {motion} on a {self.background} background"

    @property
    def key(self) -> tuple[str, str, str, str, bool]:
        """The captioned attributes: two scenes with the same key have the same caption."""
        return (self.shape, self.colour, self.direction, self.background, self.spinning)


def sample_scene(rng: np.random.Generator, exclude: frozenset[tuple] = frozenset()) -> Scene:
    """A random scene whose captioned attributes are not in ``exclude`` (held-out prompts)."""
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        key = (shape, list(COLOURS)[rng.integers(len(COLOURS))], list(DIRECTIONS)[rng.integers(len(DIRECTIONS))],
               BACKGROUNDS[rng.integers(len(BACKGROUNDS))], bool(shape in SPINNABLE and rng.random() < 0.5))
        if key not in exclude:
            break
    dark, light = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    return Scene(*key, speed=float(rng.uniform(*SPEED_RANGE)), spin=float(rng.choice((-1, 1)) * rng.uniform(0.6, 1.5)),
                 size=float(rng.uniform(*SIZE_RANGE)), start=(float(rng.random()), float(rng.random())),
                 tones=(int(dark), int(light)), texture_period=float(rng.uniform(0.08, 0.2)),
                 texture_angle=float(rng.uniform(0, math.pi)))


def scene_for_caption(caption: str, rng: np.random.Generator) -> Scene:
    """A scene showing ``caption`` (one of this world's captions) with random free parameters."""
    words = caption.removeprefix("a ").split()
    require(len(words) >= 6 and words[-1] == "background", "caption", caption,
            "a toy-world caption such as 'a red circle moving left on a striped background'")
    colour, shape = words[0], words[1]
    spinning = words[2] == "spinning"
    direction = words[5] if spinning else words[3]
    background = words[-2]
    free = sample_scene(rng)
    return Scene(shape, colour, direction, background, spinning, speed=free.speed, spin=free.spin, size=free.size,
                 start=free.start, tones=free.tones, texture_period=free.texture_period,
                 texture_angle=free.texture_angle)


# -- rendering ------------------------------------------------------------------------------------
def _background(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Texture weight in [0, 1] per pixel (0 = dark tone, 1 = light tone)."""
    c, s = math.cos(scene.texture_angle), math.sin(scene.texture_angle)
    u, v = (x * c + y * s) / scene.texture_period, (-x * s + y * c) / scene.texture_period
    if scene.background == "striped":
        return 0.5 + 0.5 * np.sign(np.sin(2 * math.pi * u))
    if scene.background == "checkered":
        return 0.5 + 0.5 * np.sign(np.sin(2 * math.pi * u) * np.sin(2 * math.pi * v))
    if scene.background == "dotted":
        du, dv = u - np.round(u), v - np.round(v)
        return (np.hypot(du, dv) < 0.25).astype(np.float64)
    return 0.5 + 0.5 * np.sin(2 * math.pi * (u + 0.3 * np.sin(2 * math.pi * v)))  # wavy


def _signed_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.75 * r) - 0.25 * r
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.8 * r
    if shape == "cross":
        arm, width = r, 0.3 * r
        return np.minimum(np.maximum(np.abs(px) - arm, np.abs(py) - width),
                          np.maximum(np.abs(px) - width, np.abs(py) - arm))
    # triangle: intersection of three half-planes at 120 degrees
    d = np.full_like(px, -np.inf)
    for k in range(3):
        a = math.pi / 2 + 2 * math.pi * k / 3
        d = np.maximum(d, px * math.cos(a) - py * math.sin(a) - 0.5 * r)
    return d


def render(scene: Scene, num_frames: int, fps: float = 10.0, size: int = 64, start_time: float = 0.0) -> np.ndarray:
    """Frames (num_frames, size, size, 3) uint8 of ``scene`` sampled at ``fps`` from ``start_time``."""
    require(num_frames >= 1, "num_frames", num_frames, "an integer >= 1")
    require(fps > 0, "fps", fps, "> 0")
    require(size >= 8, "size", size, "an integer >= 8")
    coords = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(coords, coords)
    texture = _background(scene, x, y)[None, ..., None]
    dark = np.asarray(BACKGROUND_TONES[scene.tones[0]], dtype=np.float64)
    light = np.asarray(BACKGROUND_TONES[scene.tones[1]], dtype=np.float64)
    background = dark + texture * (light - dark)

    t = start_time + np.arange(num_frames) / fps
    dx, dy = DIRECTIONS[scene.direction]
    cx = (scene.start[0] + dx * scene.speed * t)[:, None, None]
    cy = (scene.start[1] + dy * scene.speed * t)[:, None, None]
    # Torus: the offset to the nearest copy of the centre.
    ox = (x[None] - cx + 0.5) % 1.0 - 0.5
    oy = (y[None] - cy + 0.5) % 1.0 - 0.5
    angle = (scene.spin * t if scene.spinning else np.zeros_like(t))[:, None, None]
    px = ox * np.cos(angle) + oy * np.sin(angle)
    py = -ox * np.sin(angle) + oy * np.cos(angle)
    inside = np.clip(0.5 - _signed_distance(scene.shape, px, py, scene.size) * size, 0.0, 1.0)[..., None]
    colour = np.asarray(COLOURS[scene.colour], dtype=np.float64)
    frames = background * (1 - inside) + colour * inside
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)
