"""Toy-world data: an unlimited on-the-fly clip stream (:func:`toy_clip`), a writer for a file dataset (mp4 clips +
clip manifest, the same format users give the trainer for their own footage), and the held-out
prompts the evaluation uses (their attribute combinations never appear in training)."""

from __future__ import annotations

import numpy as np

from infra import storage
from infra.clip_manifest import write_clip_manifest
from infra.video_io import write_mp4
from toyworld.scenes import Scene, render, sample_scene

#: Held-out captions: each attribute is seen in training, these combinations are not.
HELD_OUT: tuple[Scene, ...] = (
    Scene("circle", "red", "left", "striped"),
    Scene("square", "blue", "right", "checkered", spinning=True),
    Scene("triangle", "yellow", "up", "dotted"),
    Scene("cross", "green", "down", "wavy", spinning=True),
    Scene("ring", "magenta", "right", "striped"),
    Scene("square", "orange", "left", "wavy"),
    Scene("circle", "cyan", "down", "checkered"),
    Scene("triangle", "white", "right", "striped", spinning=True),
)
HELD_OUT_KEYS = frozenset(s.key for s in HELD_OUT)
HELD_OUT_PROMPTS: tuple[str, ...] = tuple(s.caption for s in HELD_OUT)


def toy_clip(seed: int, index: int, num_frames: int, fps: float, size: int) -> tuple[np.ndarray, str]:
    """Clip ``index`` of the endless toy stream ``seed``: (frames (F, H, W, 3) uint8, caption).
    A pure function of (seed, index), so any worker can render any clip and a resumed training
    run sees exactly the clips it would have seen. Held-out combinations are never drawn; each
    clip starts at a random time so the stream covers every phase of the motion."""
    rng = np.random.default_rng((seed, index))
    scene = sample_scene(rng, exclude=HELD_OUT_KEYS)
    return render(scene, num_frames, fps, size, start_time=float(rng.uniform(0, 10))), scene.caption


def write_clip_dataset(root: str, num_clips: int, seconds: float = 4.0, fps: int = 30, size: int = 64,
                       seed: int = 0) -> str:
    """Render ``num_clips`` clips of ``seconds`` at ``fps`` to ``root`` (local or s3://) as mp4
    files plus ``clips.parquet``; return the manifest URI."""
    rows = []
    for i in range(num_clips):
        frames, caption = toy_clip(seed, i, round(seconds * fps), fps, size)
        name = f"clips/{i:06d}.mp4"
        write_mp4(frames, storage.join(root, name), fps=fps)
        rows.append(dict(clip_id=f"toy-{seed}-{i:06d}", video_uri=name, caption=caption, fps=float(fps),
                         num_frames=len(frames), height=size, width=size))
    manifest = storage.join(root, "clips.parquet")
    write_clip_manifest(manifest, rows)
    return manifest
