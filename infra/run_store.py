"""Where one video's artifacts and resumable work live, under an output URI (local or s3://).

    OUT/<video-id>.mp4            final (refined) video
    OUT/<video-id>.lowres.mp4     the low-resolution video before refinement
    OUT/<video-id>.json           record: parameters, seeds, timings, artifact URIs
    OUT/.work/<video-id>/extend/00003.safetensors
                                  latents of every finished chunk (init chunk = 00000)
    OUT/.work/<video-id>/lowres_frames.safetensors
                                  the low-resolution video as exact uint8 frames (refine's input)
    OUT/.work/<video-id>/models.json
                                  the fingerprint of the models that made this work

Every file is written atomically (infra.storage), so a killed run leaves only whole chunks
behind, and a re-run with the same request (same video id) picks up after the last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from infra import storage


@dataclass(frozen=True)
class RunStore:
    out: str
    video_id: str

    @property
    def work(self) -> str:
        return storage.join(self.out, ".work", self.video_id)

    @property
    def final_video(self) -> str:
        return storage.join(self.out, f"{self.video_id}.mp4")

    @property
    def low_res_video(self) -> str:
        return storage.join(self.out, f"{self.video_id}.lowres.mp4")

    @property
    def record(self) -> str:
        return storage.join(self.out, f"{self.video_id}.json")

    @property
    def low_res_frames(self) -> str:
        """The low-resolution video as exact 8-bit frames: the refine stage's input."""
        return storage.join(self.work, "lowres_frames.safetensors")

    def save_low_res(self, frames: np.ndarray) -> None:
        storage.save_tensors(self.low_res_frames, {"frames": torch.from_numpy(np.ascontiguousarray(frames))})

    def load_low_res(self) -> np.ndarray:
        return storage.load_tensors(self.low_res_frames)["frames"].numpy()

    def chunk_uri(self, index: int) -> str:
        return storage.join(self.work, "extend", f"{index:05d}.safetensors")

    def save_chunk(self, index: int, latents: torch.Tensor) -> None:
        storage.save_tensors(self.chunk_uri(index), {"latents": latents})

    def load_chunk(self, index: int) -> torch.Tensor | None:
        uri = self.chunk_uri(index)
        return storage.load_tensors(uri)["latents"] if storage.exists(uri) else None

    def finished_chunks(self) -> list[int]:
        fs, path = storage.filesystem(storage.join(self.work, "extend"))
        if not fs.exists(path):
            return []
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        return sorted(int(n.split(".")[0]) for n in names if n.endswith(".safetensors") and not n.startswith("."))

    @property
    def models_uri(self) -> str:
        return storage.join(self.work, "models.json")

    def models(self) -> str | None:
        """The fingerprint of the models that made the stored work (None: no work, or unknown)."""
        if not storage.exists(self.models_uri):
            return None
        return json.loads(storage.read_bytes(self.models_uri)).get("fingerprint")

    def claim(self, fingerprint: str) -> bool:
        """Make the stored work that of the models ``fingerprint`` names: work that other (or
        unrecorded) models made (chunk latents, low-res frames, videos, record) is removed,
        never resumed. Returns whether anything was removed."""
        if self.models() == fingerprint:
            return False
        stale = [uri for uri in (self.work, self.final_video, self.low_res_video, self.record) if storage.exists(uri)]
        for uri in stale:
            storage.remove(uri)
        storage.write_bytes(self.models_uri, json.dumps({"fingerprint": fingerprint}).encode())
        return bool(stale)

    def write_record(self, record: dict) -> None:
        storage.write_bytes(self.record, json.dumps(record, indent=2, sort_keys=True).encode())

    def read_record(self) -> dict | None:
        return json.loads(storage.read_bytes(self.record)) if storage.exists(self.record) else None
