"""Dense optical flow for the flow-based metrics (OFS, W, MAWE, flow-magnitude std; Sec. 5.2, App. D.3).

The metrics resize every frame to 720x720, as the paper does, and most videos they score are
upscaled (the low-resolution video of 64x64 or 256x256 frames, or a refinement of it), so the
frames are smooth and carry little fine texture. The estimator in use, :class:`DISLucasKanade`,
is chosen for that: OpenCV's DIS flow gives a coarse-to-fine estimate that follows large
motions, and dense Lucas-Kanade iterations with wide Gaussian windows refine it to sub-pixel
accuracy on smooth content. Both run at half the flow size (the frames reduced by a Gaussian
pyramid step), where the interpolation pattern of an upscaled video is smoothed away and only
its content moves. Farneback, at OpenCV's defaults, reads almost no motion on such frames. ``python -m evaluation.flow_validation`` measures it (and the others) on
videos with known motion; docs/metrics.md has the table.

Every estimator maps (source, target) RGB uint8 frames of one size to an (H, W, 2) float32 flow
(dx, dy) in pixels of that size, source -> target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(source, target) RGB uint8 frames -> (H, W, 2) float32 flow (dx, dy) in pixels, source -> target."""

ESTIMATORS = ("dis-lk", "farneback", "raft")


class FlowUnavailable(RuntimeError):
    """An estimator cannot run here (weights or a package absent); the message is the reason."""


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


@dataclass(frozen=True)
class DISLucasKanade:
    """DIS optical flow refined by dense Lucas-Kanade, computed at a reduced working size.

    working_size_from: frames at least this large are reduced by one Gaussian pyramid step
        (``cv2.pyrDown``, in float grey levels) before flow, and the flow is scaled back; smaller
        frames are used as they are.
    window: the standard deviation of the Lucas-Kanade window, as a fraction of the working size
        (1/22.5: 16 px at 360, i.e. 32 px of a 720x720 frame).
    iterations: Lucas-Kanade iterations after the DIS estimate (:meth:`_refine`).
    blur: the Gaussian blur of the frames Lucas-Kanade compares, as a fraction of the working size
        (2 px at 360): texture near the working size's Nyquist frequency is interpolated poorly.
    """

    working_size_from: int = 512
    window: float = 1 / 22.5
    iterations: int = 5
    blur: float = 1 / 180
    ridge: float = 1e-3  # Tikhonov term, relative to the squared trace of the structure tensor

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        height, width = source.shape[:2]
        reduce = min(height, width) >= self.working_size_from
        # float grey frames, reduced without rounding: sub-pixel flow lives in fractions of a grey level
        a, b = (cv2.pyrDown(g) if reduce else g for g in (_gray(f).astype(np.float32) for f in (source, target)))
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(*(np.clip(g + 0.5, 0, 255).astype(np.uint8) for g in (a, b)), None)
        if self.blur:
            a, b = (cv2.GaussianBlur(g, (0, 0), self.blur * min(a.shape)) for g in (a, b))
        flow = self._refine(a, b, flow)
        if reduce:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
            flow *= np.float32([width / a.shape[1], height / a.shape[0]])
        return flow

    def _refine(self, a: np.ndarray, b: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Dense Lucas-Kanade: per pixel, the update d minimising the window-weighted sum of
        (b(x + (f + d) / 2) - a(x - (f + d) / 2))^2, linearised with the mean gradient of the two
        warped frames. The warps are cubic at exact coordinates (:func:`cubic_warp`), half way
        each, so both frames are interpolated alike."""
        height, width = a.shape
        sigma = self.window * min(height, width)
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))

        def warp(image: np.ndarray, half: np.ndarray) -> np.ndarray:
            return cubic_warp(image, grid_x + half[..., 0], grid_y + half[..., 1])

        def gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8),
                    cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8))

        def window(x: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(x, (0, 0), sigma)

        for _ in range(self.iterations):
            half = flow / 2
            wa, wb = warp(a, -half), warp(b, half)
            (ax, ay), (bx, by) = gradient(wa), gradient(wb)
            gx, gy, gt = (ax + bx) / 2, (ay + by) / 2, wb - wa
            xx, xy, yy, xt, yt = (window(v) for v in (gx * gx, gx * gy, gy * gy, gx * gt, gy * gt))
            trace = xx + yy
            det = xx * yy - xy * xy + self.ridge * trace * trace + 1e-9
            flow = flow + np.dstack([(xy * yt - yy * xt) / det, (xy * xt - xx * yt) / det])
        return flow.astype(np.float32)


def _keys_weights(t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Keys' cubic convolution weights (a = -0.5) of the 4 samples around a fractional position t."""
    a = -0.5
    t2, t3 = t * t, t * t * t
    return (a * (t3 - 2 * t2 + t), (a + 2) * t3 - (a + 3) * t2 + 1, -(a + 2) * t3 + (2 * a + 3) * t2 - a * t,
            -a * (t3 - t2))


def cubic_warp(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` sampled at the float coordinates (x, y) by Keys' cubic convolution, edges repeated.

    OpenCV's ``remap`` rounds coordinates to 1/32 px, too coarse for sub-pixel flow (a 0.25 px
    motion at 720 is 0.125 px at the working size), and bilinear interpolation shifts fine
    texture by less than the offset; cubic convolution at exact coordinates does neither."""
    height, width = image.shape
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = _keys_weights(x - x0), _keys_weights(y - y0)
    columns = [np.clip(x0.astype(np.int64) + i - 1, 0, width - 1) for i in range(4)]
    rows = [np.clip(y0.astype(np.int64) + j - 1, 0, height - 1) * width for j in range(4)]
    flat = image.ravel()
    out = np.zeros(image.shape, np.float32)
    for j in range(4):
        out += wy[j] * sum(wx[i] * flat[rows[j] + columns[i]] for i in range(4))
    return out


def farneback_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Farneback on grayscale at the defaults of ``cv2.FarnebackOpticalFlow_create()`` (5 levels,
    scale 0.5, window 13, 10 iterations). It reads almost no motion on smooth or upscaled frames;
    kept for comparison with rows measured by it."""
    return cv2.FarnebackOpticalFlow_create().calc(_gray(source), _gray(target), None)


def raft_flow(weights: str) -> FlowEstimator:
    """torchvision's RAFT-large (the flow of the paper's reference MAWE script) from a local state dict.

    Raises :class:`FlowUnavailable` when the file is absent or torchvision is not installed.
    """
    if not Path(weights).is_file():
        raise FlowUnavailable(f"weights not found at {weights}")
    try:
        from torchvision.models.optical_flow import raft_large
    except ImportError as exc:
        raise FlowUnavailable("RAFT flow needs torchvision, which is not installed "
                              "(install it, or give no RAFT weights to use the default estimator)") from exc
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = raft_large(weights=None, progress=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model = model.to(device).eval()

    @torch.no_grad()
    def estimate(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        if source.shape[0] % 8 or source.shape[1] % 8:
            raise ValueError(f"frame size {source.shape[1]}x{source.shape[0]}: RAFT needs multiples of 8")
        # Raft_Large_Weights.transforms(): [0, 255] -> [-1, 1]
        a, b = (torch.from_numpy(f).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
                for f in (source, target))
        return model(a, b)[-1][0].permute(1, 2, 0).cpu().numpy()

    return estimate


def estimator(name: str, raft_weights: str | None = None) -> FlowEstimator:
    """The estimator called ``name`` (one of :data:`ESTIMATORS`)."""
    if name == "dis-lk":
        return DISLucasKanade()
    if name == "farneback":
        return farneback_flow
    if name == "raft":
        if raft_weights is None:
            raise FlowUnavailable("RAFT flow needs raft_weights (a torchvision RAFT-large state dict)")
        return raft_flow(raft_weights)
    raise ValueError(f"flow estimator {name!r}: must be one of {list(ESTIMATORS)}")
