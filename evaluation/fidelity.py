"""Does refinement keep the low-resolution video and sharpen it? (Sec. 4.3: the refiner enhances
an upscaled video by SDEdit from T' = 600; it must keep its layout, colours and motion.)

* ``psnr_to_low_res``: PSNR (dB, peak 255) between the refined video reduced to the low-res size
  (area averaging) and the low-res video: how much of what the first two stages made survives.
* ``sharpness``: mean over frames of the variance of the Laplacian of the grey frame (a standard
  focus measure; higher is sharper), for the refined video and for the low-res video upscaled
  bicubically to the refined size, the trivial upscale a refiner must beat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from models.errors import require


@dataclass(frozen=True)
class Fidelity:
    psnr_to_low_res: float  # dB
    sharpness_refined: float  # mean Laplacian variance
    sharpness_bicubic: float  # the same, of the low-res video upscaled bicubically

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def resize_frames(frames: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, height, width, 3) uint8 with an OpenCV interpolation."""
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays of the same shape (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def sharpness(frames: np.ndarray) -> float:
    """Mean over frames of the variance of the Laplacian of the grey frame."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return float(np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey]))


def fidelity(low_res: np.ndarray, refined: np.ndarray) -> Fidelity:
    """The three figures for a low-res video and its refinement, both (N, H, W, 3) uint8 with
    the same N."""
    require(low_res.ndim == 4 and refined.ndim == 4 and len(low_res) == len(refined), "refined",
            refined.shape, f"as many frames as the low-res video ({len(low_res)})")
    h, w = low_res.shape[1:3]
    height, width = refined.shape[1:3]
    reduced = resize_frames(refined, h, w, cv2.INTER_AREA)
    bicubic = resize_frames(low_res, height, width, cv2.INTER_CUBIC)
    return Fidelity(psnr(reduced, low_res), sharpness(refined), sharpness(bicubic))


__all__ = ["Fidelity", "fidelity", "psnr", "resize_frames", "sharpness"]
