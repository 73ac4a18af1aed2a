"""One video end to end in one process: init-chunk -> autoregressive-extend -> refine -> files.

This is the sequential reference of the distributed workflow and what the CLI runs.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import diffusers
import torch

from infra.run_store import RunStore
from infra.video_io import to_uint8, write_mp4
from models.chunk_plan import Chunk
from models.latent_video import StepCallback
from models.seeding import derive_seed
from stages.extend import AutoregressiveExtendStage, KeptSink, StoredChunks, generate_low_res
from stages.init_chunk import InitChunkStage, load_given
from stages.refine import RefineStage
from models.request import GenerationRequest
from stages.residency import Residency
from stages.sources import ModelSources


@dataclass
class Stages:
    init: InitChunkStage
    extend: AutoregressiveExtendStage
    refine: RefineStage | None
    models: str | None = None  # the models' fingerprint (ModelSources.fingerprint): stored with every run

    @classmethod
    def load(cls, sources: ModelSources, refine: bool = True) -> "Stages":
        """The three stages' models. With ``sources.low_memory`` they load into CPU memory and only
        the running stage's model is on ``sources.device`` (stages.residency)."""
        residency = Residency(sources.device, sources.low_memory)
        if sources.low_memory:
            sources = replace(sources, device="cpu")
        return cls(InitChunkStage(sources.load_video_ldm(), residency),
                   AutoregressiveExtendStage(sources.load_streaming(), residency),
                   RefineStage(sources.load_refiner(), sources.refine_config(), residency) if refine else None,
                   sources.fingerprint())


@dataclass
class Progress:
    """Hooks for progress display; all optional. A step callback that raises stops the run
    (between two denoising steps); finished chunks stay in the store for a later resume."""

    chunk_step: Callable[[Chunk, int], StepCallback | None] = lambda chunk, total: None
    refine_step: StepCallback | None = None
    chunk_done: KeptSink | None = None  # each low-res chunk's appended frames, in order (generate_low_res's on_kept)


def generate_video(request: GenerationRequest, stages: Stages, store: RunStore,
                   progress: Progress | None = None, attempt: int | None = None) -> dict:
    """Generate (or resume, or find finished) one video; returns its record. Stored work that
    other models made (``stages.models``) is discarded, never resumed or returned."""
    progress = progress or Progress()
    if stages.models is not None:
        store.claim(stages.models)
    if (done := store.read_record()) is not None and done.get("status") == "done":
        return done
    plan = stages.extend.plan(request)
    chunks = StoredChunks(store, attempt)  # resumed: the chunks loaded (their bytes checked), not generated
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def kept(chunk: Chunk, frames: torch.Tensor) -> None:
        chunks.kept(chunk, frames)  # a resumed chunk's decode is not the next chunk's time
        if chunk.index == 0:
            timings["init_s"] = time.perf_counter() - t0
        if progress.chunk_done is not None:
            progress.chunk_done(chunk, frames)

    low_res = generate_low_res(
        request, stages.init, stages.extend, load_chunk=chunks.load, on_chunk=chunks.save,
        on_step=lambda c: progress.chunk_step(c, len(plan)), on_kept=kept,
        given=load_given(request, store.out, stages.extend.model.video))
    timings["low_res_s"] = time.perf_counter() - t0
    timings["extend_s"] = timings["low_res_s"] - timings["init_s"]
    low_res_u8 = to_uint8(low_res)
    write_mp4(low_res_u8, store.low_res_video, request.fps)

    refined = None
    if request.refine and stages.refine is not None:
        t1 = time.perf_counter()
        refined = stages.refine(request, low_res_u8, progress.refine_step)
        timings["refine_s"] = time.perf_counter() - t1
    final = refined if refined is not None else low_res_u8
    write_mp4(final, store.final_video, request.fps)
    height, width = final.shape[1:3]
    timings["total_s"] = time.perf_counter() - t0
    record = {
        "video_id": store.video_id,
        "status": "done",
        "params": request.params(),
        "seeds": {"video": request.seed, "init": derive_seed(request.seed, "init"),
                  "extend": "derive_seed(seed, 'extend', chunk_index)",
                  "refine": "derive_seed(seed, 'refine/...', frame or boundary)"},
        "chunks": {"total": len(plan), "resumed": len(chunks.resumed),
                   "generated_frames": plan.generated_frames},
        "frames": int(final.shape[0]),
        "size": {"height": int(height), "width": int(width),
                 "low_res_height": int(low_res.shape[-2]), "low_res_width": int(low_res.shape[-1])},
        "refine": asdict(stages.refine.config_for(request)) if refined is not None else None,
        "models": stages.models,
        "timings": timings,
        "artifacts": {"video": store.final_video, "low_res_video": store.low_res_video, "record": store.record,
                      "chunk_latents": [store.chunk_uri(c.index) for c in plan.chunks]},
        "environment": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "python": platform.python_version(), "device": str(stages.extend.model.device)},
    }
    store.write_record(record)
    return record
