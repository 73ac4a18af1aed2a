"""autoregressive-extend: chunk after chunk, conditioned on the last F_cond frames (CAM) and on
the anchor frame of the first chunk (APM), with Eq. 13 guidance (paper Sec. 4, Fig. 2 stage 2).

Which frames are appended: chunk k >= 1 covers video frames [8k, 8k + 16); its first F_cond = 8
frames re-cover the conditioning frames and are dropped, its last 8 are appended (see
models/chunk_plan.py for the diagram and for lengths that are not 16 + 8n). With the request's
``condition_replacement`` (beyond the paper) those re-covering frames are pinned, at every step,
to the previous chunk's latents noised to the step's t.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from infra.run_store import RunStore
from models.chunk_plan import Chunk, ChunkPlan
from models.latent_video import StepCallback
from models.seeding import stream
from models.streaming_t2v import ConditionReplacement, StreamingT2V
from stages.init_chunk import ChunkOutput, InitChunkStage, given_chunk
from models.request import GenerationRequest
from stages.residency import Residency


class AutoregressiveExtendStage:
    """Loads StreamingT2V once; :meth:`next_chunk` makes one chunk of one video."""

    def __init__(self, model: StreamingT2V, residency: Residency | None = None) -> None:
        self.model = model
        self.residency = residency or Residency(str(model.device))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.residency.use(self.model)
        return self.model.decode(latents)

    def start_from(self, given: torch.Tensor) -> ChunkOutput:
        """Chunk 0 of a video that starts from ``given`` frames (:func:`stages.init_chunk.given_chunk`)."""
        self.residency.use(self.model)
        return given_chunk(self.model, given, self.model.cond_frames)

    def plan(self, request: GenerationRequest) -> ChunkPlan:
        return ChunkPlan.for_extend(request.num_frames, self.model.video.frames_per_chunk, self.model.cond_frames,
                                    request.given_frames)

    def next_chunk(self, request: GenerationRequest, chunk: Chunk, anchor: torch.Tensor, previous: ChunkOutput,
                   on_step: StepCallback | None = None) -> ChunkOutput:
        """anchor: (1, 3, H, W); previous: the previous chunk (its latents and frames (1, 3, F, H, W)).
        The chunk follows the prompt in force at its first new frame (models.prompt_schedule)."""
        self.residency.use(self.model)
        k = self.model.cond_frames
        replacement = None
        if request.condition_replacement:  # its own noise stream: the chunk's other draws stay the same
            replacement = ConditionReplacement(previous.latents[:, :, -k:],
                                               [stream(request.seed, "extend-replacement", chunk.index)])
        latents = self.model.sample_chunk(
            [request.schedule.for_chunk(chunk)], anchor if request.apm else None, previous.frames[:, :, -k:],
            [stream(request.seed, "extend", chunk.index)], request.guidance, [request.negative_prompt],
            request.num_inference_steps, on_step, replacement)
        return ChunkOutput(latents, self.model.decode(latents))


ChunkSink = Callable[[Chunk, ChunkOutput], None]
ChunkSource = Callable[[Chunk], torch.Tensor | None]
KeptSink = Callable[[Chunk, torch.Tensor], None]


@dataclass
class StoredChunks:
    """:func:`generate_low_res`'s hooks onto a run store: ``load`` resumes a chunk the store
    vouches for (and counts it in ``resumed``), ``save`` stores a generated chunk with its frame
    range and the seconds since the previous chunk was finished, ``kept`` (an ``on_kept``) marks
    when a chunk was finished, resumed ones included."""

    store: RunStore
    attempt: int | None = None
    resumed: list[int] = field(default_factory=list)
    last: float = field(default_factory=time.perf_counter)
    rows: dict[int, dict] | None = None

    def load(self, chunk: Chunk) -> torch.Tensor | None:
        if self.rows is None:  # the chunk table, read once for the whole resume
            self.rows = self.store.chunk_rows()
        latents = self.store.load_chunk(chunk.index, self.rows)
        if latents is not None:
            self.resumed.append(chunk.index)
        return latents

    def save(self, chunk: Chunk, out: ChunkOutput) -> None:
        now = time.perf_counter()
        self.store.save_chunk(chunk.index, out.latents, (chunk.keep_start, chunk.keep_stop), now - self.last,
                              self.attempt)
        self.last = now

    def kept(self, chunk: Chunk, frames: torch.Tensor) -> None:
        self.last = time.perf_counter()


def generate_low_res(request: GenerationRequest, init: InitChunkStage, extend: AutoregressiveExtendStage,
                     load_chunk: ChunkSource = lambda chunk: None, on_chunk: ChunkSink | None = None,
                     on_step: Callable[[Chunk], StepCallback | None] = lambda chunk: None,
                     on_kept: KeptSink | None = None, given: torch.Tensor | None = None) -> torch.Tensor:
    """The whole low-resolution video (1, 3, N, H, W).

    ``given`` (1, 3, L, H, W): the frames the video starts with (:func:`stages.init_chunk.load_given`
    for a request with an init video or image): they are chunk 0, always rebuilt from the given
    frames (never decoded from stored latents, which would change them), and the anchor is taken
    from them.

    ``load_chunk`` returns the saved latents of a finished chunk (or None): those chunks are
    decoded instead of generated, which is how a crashed run resumes. Every chunk's noise comes
    from its own seeded stream, so a resumed video is bit-identical to an uninterrupted one.
    ``on_kept`` sees every chunk in order, resumed or generated, with the frames it appends to the
    video (1, 3, n, H, W), as soon as it is finished (after ``on_chunk`` has saved it): what a
    client streaming the video is shown.
    """
    plan = extend.plan(request)
    kept, previous, anchor = [], None, None
    for chunk in plan.chunks:
        saved = load_chunk(chunk)
        if chunk.index == 0 and given is not None:
            out = extend.start_from(given)
        elif saved is not None:
            out = ChunkOutput(saved, extend.decode(saved))
        elif chunk.index == 0:
            out = init(request, on_step(chunk))
        else:
            out = extend.next_chunk(request, chunk, anchor, previous, on_step(chunk))
        if saved is None and on_chunk is not None:
            on_chunk(chunk, out)
        own = out.frames[:, :, -chunk.frames:] if chunk.index == 0 and given is not None else out.frames
        if chunk.index == 0:
            anchor = own[:, :, request.anchor_frame]
        kept.append(own[:, :, chunk.kept_slice()])
        if on_kept is not None:
            on_kept(chunk, kept[-1])
        previous = out
    return torch.cat(kept, dim=2)
