"""Training clips: the toy world rendered on the fly, or a clip manifest of the user's footage.

Row ``r`` of a training run is one clip sampled as a pure function of (source, seed, r): step
``s`` of a run with global batch B uses rows [s*B, (s+1)*B). So a resumed run sees exactly the
clips an uninterrupted one would, whichever worker renders or decodes them. The same sources run
in-process (:func:`local_batches`) and as a Ray Data pipeline (:func:`ray_dataset`), whose
``map_batches`` decodes and samples on CPU workers and streams to the trainer.

Sampling (paper Sec. 5.1: clips at 3 FPS, 256x256): a clip of ``num_frames`` frames at the
target ``fps`` is cut from a random start; frame k is the source frame nearest to
start + k / fps seconds; frames are resized (shorter side, antialiased) and centre-cropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from infra.clip_manifest import read_clip_manifest
from infra.video_io import read_video
from models.errors import ConfigError, require
from toyworld.dataset import toy_clip

TOYWORLD = "toyworld"


@dataclass(frozen=True)
class ClipSpec:
    num_frames: int = 16
    fps: float = 3.0
    height: int = 256
    width: int = 256

    def __post_init__(self) -> None:
        require(self.num_frames >= 1, "clip_frames", self.num_frames, "an integer >= 1")
        require(self.fps > 0, "fps", self.fps, "a frame rate > 0")

    @property
    def seconds(self) -> float:
        """Time spanned from the first to the last sampled frame."""
        return (self.num_frames - 1) / self.fps


def source_frame_indices(start_s: float, spec: ClipSpec, source_fps: float, source_frames: int) -> np.ndarray:
    """Indices of the source frames nearest to start + k / fps (k < num_frames)."""
    times = start_s + np.arange(spec.num_frames) / spec.fps
    return np.clip(np.round(times * source_fps).astype(np.int64), 0, source_frames - 1)


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, height, width, 3): scale the shorter side, centre-crop."""
    n, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class ClipSource:
    """Row index -> (frames (F, H, W, 3) uint8, caption). Picklable, for Ray Data workers."""

    def __init__(self, data: str, spec: ClipSpec, seed: int) -> None:
        self.data, self.spec, self.seed = data, spec, seed
        self.clips: list[dict] = []
        if data != TOYWORLD:
            table = read_clip_manifest(data)
            self.clips = [c for c in table.to_pylist() if (c["num_frames"] - 1) / c["fps"] >= spec.seconds]
            if not self.clips:
                raise ConfigError("data", data, f"a clip manifest with clips of at least {spec.seconds:.2f} s "
                                  f"({spec.num_frames} frames at {spec.fps} fps); none of its {table.num_rows} is")

    def __call__(self, row: int) -> tuple[np.ndarray, str]:
        if self.data == TOYWORLD:
            return self._toy_clip(row)
        rng = np.random.default_rng((self.seed, row))
        clip = self.clips[int(rng.integers(len(self.clips)))]
        video = read_video(clip["video_uri"])
        duration = (len(video) - 1) / clip["fps"]
        start = float(rng.uniform(0, max(0.0, duration - self.spec.seconds)))
        frames = video[source_frame_indices(start, self.spec, clip["fps"], len(video))]
        return resize_crop(frames, self.spec.height, self.spec.width), clip["caption"]

    def _toy_clip(self, row: int) -> tuple[np.ndarray, str]:
        """The toy world is square; a wider or taller clip (the refiner's canvas) gets the square
        centred on black, exactly as the refinement stage places a video on its canvas."""
        h, w = self.spec.height, self.spec.width
        frames, caption = toy_clip(self.seed, row, self.spec.num_frames, self.spec.fps, min(h, w))
        if h == w:
            return frames, caption
        canvas = np.zeros((len(frames), h, w, 3), dtype=frames.dtype)
        top, left = (h - frames.shape[1]) // 2, (w - frames.shape[2]) // 2
        canvas[:, top:top + frames.shape[1], left:left + frames.shape[2]] = frames
        return canvas, caption


class RenderClips:
    """Ray Data ``map_batches`` callable: a batch of row ids -> frames and captions."""

    def __init__(self, source: ClipSource) -> None:
        self.source = source

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = [self.source(int(r)) for r in batch["id"]]
        return {"row": batch["id"], "frames": np.stack([c[0] for c in clips]),
                "caption": np.array([c[1] for c in clips], dtype=object)}


def to_model_input(frames: np.ndarray) -> torch.Tensor:
    """(b, F, H, W, 3) uint8 -> (b, 3, F, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def local_batches(source: ClipSource, batch_size: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """In-process batches for steps start_step, start_step + 1, ... (no Ray)."""
    step = start_step
    while True:
        clips = [source(step * batch_size + i) for i in range(batch_size)]
        yield to_model_input(np.stack([c[0] for c in clips])), [c[1] for c in clips]
        step += 1


def worker_rows(per_worker: int, start_step: int, steps: int, worker: int = 0, num_workers: int = 1) -> np.ndarray:
    """Row ids of worker ``worker`` for steps [start_step, steps): s*B + worker*b + i, with b the
    per-worker batch and B = b * num_workers the global one."""
    step = np.repeat(np.arange(start_step, max(start_step, steps), dtype=np.int64), per_worker)
    i = np.tile(np.arange(per_worker, dtype=np.int64), max(0, steps - start_step))
    return step * per_worker * num_workers + worker * per_worker + i


def ray_dataset(source: ClipSource, rows: np.ndarray, per_worker: int, cpus_per_task: float = 0.5):
    """A Ray Dataset of the given rows rendered/decoded on a CPU actor, in row order."""
    import pyarrow as pa
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # row order = step order: resume is exact
    return ray.data.from_arrow(pa.table({"id": rows})).map_batches(
        RenderClips, fn_constructor_args=(source,), batch_size=per_worker, batch_format="numpy",
        num_cpus=cpus_per_task, compute=ray.data.ActorPoolStrategy(size=1))
