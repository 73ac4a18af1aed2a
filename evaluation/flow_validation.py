"""Videos with known motion, to validate the optical flow behind OFS, W, MAWE and the flow-magnitude std.

Each case renders a random colour texture moving by an exact motion (a pan, a diagonal pan, a
rotation or a zoom about the centre, at a given speed in pixels per frame of a 720x720 frame), at
a source size (64, 128, 256 or 720 px), upscaled bilinearly to 720x720 as the pipeline's videos
are, so the true flow between consecutive frames is known at every pixel. A flow estimator passes
a case when it recovers OFS (mean squared flow magnitude) within :data:`OFS_TOLERANCE` and the
median endpoint error is at most :data:`MEDIAN_ERROR_PX`.

The texture is a sum of sinusoids with random orientations, frequencies log-uniform from 2 cycles
per frame up to a band limit, amplitudes falling as f^-1/2 (natural images fall about so), each
colour channel with its own amplitudes and phases, scaled to a standard deviation of 55 of 255.
Every frame is the analytic texture sampled at the source's pixel centres, so motion is exact to
the sampling. The band limit is a quarter of the source's Nyquist frequency (``sharp``) or an
eighth (``blurred``), at least 16 cycles per frame: near the Nyquist frequency, bilinear
upscaling's fixed interpolation pattern makes the upscaled frames appear to move differently from
their content, and the "true" flow would no longer be what the frames show.

    python -m evaluation.flow_validation [--method dis-lk|farneback] [--json]

prints the table (estimator, case, true OFS, measured OFS, median error) that docs/metrics.md holds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from evaluation.metrics import FlowConfig, flow_statistics, mawe

SIZE = 720  # the paper's flow size: speeds and flows are in pixels of a 720x720 frame
MOTIONS = ("pan", "diagonal", "rotation", "zoom")
SPEEDS = (0.25, 1.0, 3.0, 6.0, 12.0)  # px per frame; for rotation and zoom, at the frame's corners
SOURCES = (64, 128, 256, 720)
BLURS = {"sharp": 1 / 8, "blurred": 1 / 16}  # band limit in cycles per frame, per source pixel
MIN_BAND_LIMIT = 16.0  # cycles per frame
SINUSOIDS = 24
CONTRAST = 55.0  # standard deviation of each channel, of 255

OFS_TOLERANCE = 0.10  # relative
MEDIAN_ERROR_PX = 0.5


@dataclass(frozen=True)
class Case:
    """One known-motion video: ``motion`` at ``speed`` px per frame (0 for a still video)."""

    motion: str
    speed: float
    source: int
    blur: str = "sharp"
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.motion} {self.speed:g} px, {self.source} px source, {self.blur}"

    @property
    def band_limit(self) -> float:
        """The texture's highest frequency, in cycles per frame."""
        return max(self.source * BLURS[self.blur], MIN_BAND_LIMIT)


def validation_cases() -> list[Case]:
    """Every motion at every speed on every source and blur (a blur whose band limit equals the
    sharp one's, as on small sources, is not repeated), and a still video per source."""
    textures = []
    for source in SOURCES:
        for blur in BLURS:
            case = Case("static", 0.0, source, blur)
            if all(other.band_limit != case.band_limit for other in textures if other.source == source):
                textures.append(case)
    moving = [Case(m, s, t.source, t.blur) for t in textures for m in MOTIONS for s in SPEEDS]
    return moving + textures


class Texture:
    """The analytic texture of one case: :meth:`sample` evaluates it on any grid of 720-frame coordinates."""

    def __init__(self, case: Case) -> None:
        rng = np.random.default_rng(case.seed)
        cycles = np.exp(rng.uniform(math.log(2.0), math.log(case.band_limit), SINUSOIDS))
        angle = rng.uniform(0, 2 * math.pi, SINUSOIDS)
        self.frequency = np.stack([cycles * np.cos(angle), cycles * np.sin(angle)], 1) / SIZE  # cycles per px
        self.amplitude = rng.uniform(0.5, 1.0, (3, SINUSOIDS)) / np.sqrt(cycles / 2.0)
        self.phase = rng.uniform(0, 2 * math.pi, (3, SINUSOIDS))
        self.norm = np.sqrt(np.square(self.amplitude).sum(1) / 2)  # each channel's standard deviation

    def sample(self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, n: int) -> np.ndarray:
        """(n, n, 3) float texture at the points origin + i * dx + j * dy (column i, row j): an affine
        grid, so every sinusoid is an outer product and each channel one complex matrix product."""
        steps = np.arange(n)
        phase0 = 2 * math.pi * self.frequency @ origin
        along_x = np.exp(2j * math.pi * np.outer(steps, self.frequency @ dx))  # (n, K)
        along_y = np.exp(2j * math.pi * np.outer(steps, self.frequency @ dy))
        image = np.empty((n, n, 3))
        for c in range(3):
            weights = self.amplitude[c] * np.exp(1j * (self.phase[c] + phase0))
            image[..., c] = ((along_y * weights) @ along_x.T).real
        return np.clip(127.5 + CONTRAST * image / self.norm, 0, 255)


def _motion(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(linear part L, translation b) of the motion from one frame to the next, p -> L p + b, in
    720-frame pixel coordinates (pixel centres at 0..719)."""
    centre = np.full(2, (SIZE - 1) / 2)
    radius = float(np.hypot(*centre))
    if case.motion == "static" or case.speed == 0:
        return np.eye(2), np.zeros(2)
    if case.motion in ("pan", "diagonal"):
        direction = np.array([1.0, 0.0]) if case.motion == "pan" else np.array([1.0, 1.0]) / math.sqrt(2)
        return np.eye(2), case.speed * direction
    if case.motion == "rotation":
        w = 2 * math.asin(case.speed / (2 * radius))  # the corners move ``speed`` px per frame
        linear = np.array([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]])
    elif case.motion == "zoom":
        linear = np.eye(2) * (1 + case.speed / radius)
    else:
        raise ValueError(f"motion {case.motion!r}: must be one of {list(MOTIONS)} or 'static'")
    return linear, centre - linear @ centre


def render(case: Case, frames: int = 2, upscale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(video, flow): ``frames`` uint8 RGB frames of 720x720, and the true (720, 720, 2) flow from
    each frame to the next (the same for every pair). ``upscale=False`` keeps the frames at the
    source size (the flow stays in pixels of 720x720)."""
    texture = Texture(case)
    linear, shift = _motion(case)
    step = SIZE / case.source  # source pixel k has its centre at (k + 0.5) * step - 0.5
    video = []
    for t in range(frames):
        # frame t shows, at p, the texture at M^-t (p), with M(p) = linear p + shift
        inverse = np.linalg.matrix_power(np.linalg.inv(linear), t)
        offset = -sum(np.linalg.matrix_power(np.linalg.inv(linear), k + 1) @ shift for k in range(t)) \
            if t else np.zeros(2)
        start = np.full(2, 0.5 * step - 0.5)
        image = texture.sample(inverse @ start + offset, inverse @ np.array([step, 0.0]),
                               inverse @ np.array([0.0, step]), case.source).astype(np.float32)
        if upscale and case.source != SIZE:
            image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        video.append(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    grid = np.stack(np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64)), -1)
    flow = grid @ linear.T + shift - grid
    return np.stack(video), flow.astype(np.float32)


@dataclass(frozen=True)
class Result:
    method: str
    case: str
    true_ofs: float
    measured_ofs: float
    median_error_px: float
    seconds: float

    @property
    def passed(self) -> bool:
        if self.true_ofs == 0:
            return self.measured_ofs <= MEDIAN_ERROR_PX ** 2 and self.median_error_px <= MEDIAN_ERROR_PX
        return abs(self.measured_ofs / self.true_ofs - 1) <= OFS_TOLERANCE and self.median_error_px <= MEDIAN_ERROR_PX


def measure(case: Case, method: str = "dis-lk") -> Result:
    """OFS and median endpoint error of ``method``'s flow between the first two frames of ``case``."""
    video, truth = render(case)
    estimate = FlowConfig(size=(SIZE, SIZE), method=method).estimator()
    t0 = time.perf_counter()
    flow = estimate(video[0], video[1])
    seconds = time.perf_counter() - t0
    error = np.sqrt(np.square(flow - truth).sum(-1))
    return Result(method, case.label, float(np.square(truth).sum(-1).mean()), float(np.square(flow).sum(-1).mean()),
                  float(np.median(error)), seconds)


def flicker_mawe(method: str = "dis-lk", frames: int = 8) -> tuple[float, float]:
    """MAWE (Eq. 9) of a 3 px-per-frame pan without and with flicker (each frame's brightness
    shifted by a random amount in [-40, 40] of 255): flicker must score higher."""
    video, _ = render(Case("pan", 3.0, 256), frames)
    brightness = np.random.default_rng(1).integers(-40, 41, size=(frames, 1, 1, 1))
    flicker = np.clip(video.astype(np.int64) + brightness, 0, 255).astype(np.uint8)
    config = FlowConfig(size=(SIZE, SIZE), method=method)
    return mawe(flow_statistics(video, config)), mawe(flow_statistics(flicker, config))


def markdown(results: list[Result]) -> str:
    lines = ["| estimator | case | true OFS (px²) | measured OFS | ratio | median error (px) | pass |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "—" if r.true_ofs == 0 else f"{r.measured_ofs / r.true_ofs:.3f}"
        lines.append(f"| {r.method} | {r.case} | {r.true_ofs:.4g} | {r.measured_ofs:.4g} | {ratio} | "
                     f"{r.median_error_px:.3f} | {'yes' if r.passed else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.flow_validation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="dis-lk", help="dis-lk | farneback")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    args = parser.parse_args(argv)
    results = [measure(case, args.method) for case in validation_cases()]
    smooth, flickering = flicker_mawe(args.method)
    if args.json:
        print(json.dumps({"cases": [asdict(r) | {"passed": r.passed} for r in results],
                          "mawe_smooth": smooth, "mawe_flicker": flickering}, indent=2))
    else:
        print(markdown(results))
        worst = max((abs(r.measured_ofs / r.true_ofs - 1) for r in results if r.true_ofs), default=0.0)
        print(f"\n{sum(r.passed for r in results)} of {len(results)} cases pass; worst OFS error {worst:.1%}; "
              f"worst median error {max(r.median_error_px for r in results):.3f} px; "
              f"{np.mean([r.seconds for r in results]):.3f} s per flow; "
              f"MAWE without flicker {smooth:.4g}, with flicker {flickering:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
