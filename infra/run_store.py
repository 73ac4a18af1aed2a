"""Where one video's artifacts and resumable work live, under an output URI (local or s3://).

    OUT/<video-id>.mp4            final (refined) video
    OUT/<video-id>.lowres.mp4     the low-resolution video before refinement
    OUT/<video-id>.json           record: parameters, seeds, timings, artifact URIs
    OUT/.work/<video-id>/extend/00003.safetensors
                                  latents of every finished chunk (init chunk = 00000)
    OUT/.work/<video-id>/lowres_frames.safetensors
                                  the low-resolution video as exact uint8 frames (refine's input)
    OUT/.work/<video-id>/chunks/00003.mp4
                                  the frames chunk 3 appended to the low-res video, for clients
                                  watching a video grow (written when a job asks for previews)
    OUT/.work/<video-id>/models.json
                                  the fingerprint of the models that made this work
    OUT/chunks/<video-id>.parquet the chunk table (infra.chunk_table): a row per finished chunk,
                                  with its latent file's SHA-256

Every file is written atomically (infra.storage), so a killed run leaves only whole chunks
behind, and a re-run with the same request (same video id) picks up after the last one. A chunk
is resumed only when its file holds the bytes its row in the chunk table records; a chunk whose
file is missing or corrupt, or that has no row, is generated again (bit-identically: every
chunk's noise is seeded).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from infra import chunk_table, storage

LOG = logging.getLogger(__name__)


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

    def manifest_artifacts(self) -> dict[str, str]:
        """The manifest's artifact columns for this video (infra.manifest.ARTIFACT_COLUMNS)."""
        return {"chunk_latents_uri": storage.join(self.work, "extend"), "low_res_uri": self.low_res_video,
                "video_uri": self.final_video}

    def chunk_preview(self, index: int) -> str:
        """The MP4 of the frames low-res chunk ``index`` appended to the video."""
        return storage.join(self.work, "chunks", f"{index:05d}.mp4")

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

    @property
    def chunk_table(self) -> str:
        return chunk_table.table_uri(self.out, self.video_id)

    @property
    def files(self) -> tuple[str, ...]:
        """Everything stored for this video (what a discard or a purge removes)."""
        return self.work, self.chunk_table, self.final_video, self.low_res_video, self.record

    def save_chunk(self, index: int, latents: torch.Tensor, frames: tuple[int, int] | None = None,
                   seconds: float | None = None, attempt: int | None = None) -> None:
        """Store a finished chunk's latents, then its row in the chunk table (``frames``: the
        [start, stop) frames it appends to the video)."""
        data = storage.encode_tensors({"latents": latents})
        uri = self.chunk_uri(index)
        storage.write_bytes(uri, data)
        chunk_table.record_chunk(self.out, self.video_id, {
            "chunk": index, "frame_start": frames[0] if frames else None, "frame_stop": frames[1] if frames else None,
            "latent_uri": uri, "shape": list(latents.shape), "dtype": str(latents.dtype).removeprefix("torch."),
            "sha256": chunk_table.digest(data), "seconds": seconds, "attempt": attempt})

    def load_chunk(self, index: int, rows: dict[int, dict] | None = None) -> torch.Tensor | None:
        """The chunk's latents, if its file holds exactly the bytes its chunk-table row records;
        else None, and the chunk is generated again. ``rows``: the chunk table already read
        (:meth:`chunk_rows`), so that resuming many chunks reads it once."""
        row = (self.chunk_rows() if rows is None else rows).get(index)
        uri = self.chunk_uri(index)
        if row is None or not storage.exists(uri):
            return None
        data = storage.read_bytes(uri)
        if chunk_table.digest(data) != row["sha256"]:
            LOG.warning("video %s chunk %d: %s does not match its recorded SHA-256; generating it again",
                        self.video_id, index, uri)
            return None
        return storage.decode_tensors(data)["latents"]

    def chunk_rows(self) -> dict[int, dict]:
        """The video's chunk-table rows by chunk index."""
        return chunk_table.read_rows(self.out, self.video_id)

    def finished_chunks(self) -> list[int]:
        """The chunks the chunk table records (load_chunk still checks each one's bytes)."""
        return sorted(self.chunk_rows())

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
        stale = [uri for uri in self.files if storage.exists(uri)]
        for uri in stale:
            storage.remove(uri)
        storage.write_bytes(self.models_uri, json.dumps({"fingerprint": fingerprint}).encode())
        return bool(stale)

    def write_record(self, record: dict) -> None:
        storage.write_bytes(self.record, json.dumps(record, indent=2, sort_keys=True).encode())

    def read_record(self) -> dict | None:
        return json.loads(storage.read_bytes(self.record)) if storage.exists(self.record) else None
