"""The stage classes as pool workers: each loads its model once and exchanges every large
artifact through the run store (storage), so the driver only passes requests and small results.

These are plain classes; :mod:`stages.pools` turns them into Ray actors pinned to a GPU type.
Every method is idempotent and resumable (it skips what storage already holds), which is what
makes Ray's actor restarts and task retries safe. Given the engine (stages/engine.py), a worker
reports each finished chunk to it and stops within a denoising step or two of a cancellation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from infra import storage
from infra.run_store import RunStore
from infra.video_io import to_uint8, write_mp4
from models.presets import get_preset
from models.schedule import NoiseSchedule
from stages.extend import AutoregressiveExtendStage, StoredChunks, generate_low_res
from stages.init_chunk import InitChunkStage, given_chunk, load_given
from stages.refine import RefineSession, RefineStage
from models.request import GenerationRequest
from stages.residency import Residency
from stages.sources import ModelSources


class Cancelled(Exception):
    """Raised inside a worker when the engine says its video was cancelled."""


@dataclass(frozen=True)
class VideoJob:
    """What travels from the engine to a worker: the request, where its artifacts live, and
    whether each low-res chunk also gets its own MP4 (``previews``, for clients watching it grow)."""

    params: dict
    out: str
    previews: bool = False

    @property
    def request(self) -> GenerationRequest:
        return GenerationRequest(**self.params)

    @property
    def store(self) -> RunStore:
        return RunStore(self.out, self.request.video_id)


def _threads(n: int) -> None:
    torch.set_num_threads(n)


class EngineLink:
    """A worker's line to the engine for one video: chunk reports, and a cancellation check that
    never blocks a denoising step (each step sends the question and reads the previous step's
    answer once it has come, so a cancelled video stops within two steps). No engine: no-ops."""

    def __init__(self, engine, video_id: str) -> None:
        self.engine, self.video_id, self.pending = engine, video_id, None

    def step(self, step: int, total: int) -> None:
        if self.engine is None:
            return
        import ray

        if self.pending is not None and ray.wait([self.pending], timeout=0)[0]:
            if ray.get(self.pending):
                raise Cancelled(self.video_id)
            self.pending = None
        if self.pending is None:
            self.pending = self.engine.should_stop.remote(self.video_id)

    def stop_now(self) -> None:
        """Ask and wait for the answer (once per refine step)."""
        import ray

        if self.engine is not None and ray.get(self.engine.should_stop.remote(self.video_id)):
            raise Cancelled(self.video_id)

    def chunk_done(self, index: int) -> None:
        if self.engine is not None:
            self.engine.chunk_done.remote(self.video_id, index)


def _preview(job: VideoJob, index: int, frames: torch.Tensor) -> None:
    """The MP4 of the frames low-res chunk ``index`` appended to the video (once)."""
    uri = job.store.chunk_preview(index)
    if job.previews and not storage.exists(uri):
        write_mp4(to_uint8(frames), uri, job.request.fps)


class InitChunkWorker:
    def __init__(self, sources: ModelSources, torch_threads: int = 1) -> None:
        _threads(torch_threads)
        self.stage = InitChunkStage(sources.load_video_ldm())

    def run(self, job: VideoJob, engine=None) -> dict:
        request, store, t0 = job.request, job.store, time.perf_counter()
        if store.load_chunk(0) is not None:
            return {"init_s": time.perf_counter() - t0}
        link = EngineLink(engine, request.video_id)
        if request.given_frames:  # a user's clip or image, as given
            frames = load_given(request, job.out, self.stage.model.video)
            latents = given_chunk(self.stage.model, frames, get_preset(request.preset).cam.cond_frames).latents
        elif job.previews:
            out = self.stage(request, link.step)
            latents, frames = out.latents, out.frames
        else:
            latents, frames = self.stage.generate(request, link.step), None
        first = request.extend_plan().chunks[0]
        store.save_chunk(0, latents, (first.keep_start, first.keep_stop), time.perf_counter() - t0)
        if frames is not None:
            _preview(job, 0, frames)
        link.chunk_done(0)
        return {"init_s": time.perf_counter() - t0}


class ExtendWorker:
    def __init__(self, sources: ModelSources, torch_threads: int = 1) -> None:
        _threads(torch_threads)
        self.extend = AutoregressiveExtendStage(sources.load_streaming())

    def run(self, job: VideoJob, engine=None) -> dict:
        """All remaining chunks of one video, resuming after the last one in storage; publishes
        the low-res video (exact frames for refine, and an MP4)."""
        request, store, t0 = job.request, job.store, time.perf_counter()
        resumed = len(store.finished_chunks())
        if store.load_chunk(0) is None:
            raise RuntimeError(f"video {request.video_id}: the init chunk is not in storage")
        chunks, link = StoredChunks(store), EngineLink(engine, request.video_id)

        def kept(chunk, frames: torch.Tensor) -> None:
            chunks.kept(chunk, frames)
            _preview(job, chunk.index, frames)
            link.chunk_done(chunk.index)

        low_res = generate_low_res(request, None, self.extend, load_chunk=chunks.load, on_chunk=chunks.save,
                                   on_step=lambda chunk: link.step, on_kept=kept,
                                   given=load_given(request, job.out, self.extend.model.video))
        frames = to_uint8(low_res)
        store.save_low_res(frames)
        write_mp4(frames, store.low_res_video, request.fps)
        if not request.refine:
            write_mp4(frames, store.final_video, request.fps)
        return {"extend_s": time.perf_counter() - t0, "chunks_total": len(self.extend.plan(request)),
                "chunks_resumed": resumed, "frames": int(frames.shape[0])}


class RefineWorker:
    """One of the refine actors. The coordinator role (:meth:`encode`, :meth:`finish`) and the
    chunk-step role (:meth:`step`) share the model; sessions are rebuilt on demand after a restart."""

    def __init__(self, sources: ModelSources, torch_threads: int = 1) -> None:
        _threads(torch_threads)
        model = sources.load_refiner()
        self.stage = RefineStage(model, sources.refine_config(), Residency(sources.device, sources.low_memory, model))
        self.sessions: dict[str, RefineSession] = {}

    def encode(self, job: VideoJob) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The clean latents z_0 of every refine chunk, one object each (call with
        ``num_returns`` = number of chunks), so a chunk's worker fetches only its own frames."""
        clean = self.stage.encode(job.request, job.store.load_low_res())
        chunks = self._session(job, clean).refiner.chunks
        parts = tuple(clean[:, :, c.start:c.stop].clone() for c in chunks)
        return parts[0] if len(parts) == 1 else parts

    def _session(self, job: VideoJob, like: torch.Tensor) -> RefineSession:
        """The video's session; ``like`` is any of its chunk latents (for the latent frame shape)."""
        key = job.request.video_id
        if key not in self.sessions:
            c, h, w = like.shape[1], like.shape[3], like.shape[4]
            self.sessions[key] = self.stage.session(job.request, (1, c, job.request.num_frames, h, w))
        return self.sessions[key]

    def step(self, job: VideoJob, index: int, step: int, own: torch.Tensor,
             left: torch.Tensor | None, right: torch.Tensor | None, engine=None) -> torch.Tensor:
        """Chunk ``index`` at DDIM step ``step``: its input is z_0 noised to T' (step 0) or its
        blended latent after step - 1, built from its own and its neighbours' results; returns
        its latent after the step, before blending. Chunk 0 asks the engine (if any) whether the
        video was cancelled; a cancelled step fails every step that depends on it at once."""
        if index == 0:
            EngineLink(engine, job.request.video_id).stop_now()
        refiner = self._session(job, own).refiner
        if step == 0:
            x = refiner.initial(refiner.chunks[index], own)
        else:
            x = refiner.blended(index, step - 1, {index - 1: left, index: own, index + 1: right}.__getitem__)
        return self.sessions[job.request.video_id].step(index, step, x)

    def finish(self, job: VideoJob, *stepped: torch.Tensor, return_frames: bool = False) -> dict:
        """Blend after the last step, assemble, decode, crop and publish the refined video
        (``return_frames`` also returns the uint8 frames, for comparisons)."""
        refiner = self._session(job, stepped[0]).refiner
        last = len(refiner.timesteps) - 1
        latents = [refiner.blended(c.index, last, stepped.__getitem__) for c in refiner.chunks]
        frames = self.stage.decode(job.request, refiner.assemble(latents))
        write_mp4(frames, job.store.final_video, job.request.fps)
        self.sessions.pop(job.request.video_id, None)
        result = {"frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2])}
        return {**result, "pixels": frames} if return_frames else result

    def refine_sequential(self, job: VideoJob) -> np.ndarray:
        """The single-process sequential refine on this worker (reference for the parallel layout)."""
        return self.stage(job.request, job.store.load_low_res())

    def schedule(self) -> NoiseSchedule:
        """The refiner's noise schedule (the driver derives each video's step count from it)."""
        return self.stage.model.schedule
