"""The one chunk plan: which frames each chunk covers, where chunks overlap, which frames are kept.

Both long-video stages cut the video into chunks of ``chunk_frames`` frames, consecutive chunks
sharing ``overlap`` frames (stride = chunk_frames - overlap):

autoregressive-extend (F = 16, F_cond = 8)::

    video frames   0       8       16      24      32      40
    chunk 0        [=======|=======]                                keeps 0..15 (init chunk)
    chunk 1                [cccccccc=======]                        keeps 16..23
    chunk 2                        [cccccccc=======]                keeps 24..31
    chunk 3                                [cccccccc=======]        keeps 32..39

  Chunk k >= 1 is generated conditioned (CAM) on the last F_cond frames of the video so far
  (``c``: frames 8k..8k+7); its first F_cond frames re-cover those frames and are discarded, its
  last F - F_cond frames are appended. A length that is not 16 + 8n is reached by generating the
  last chunk whole and dropping its surplus frames, so an N-frame video is exactly the first N
  frames of any longer video with the same seed.

  A video that starts from given frames (a user's clip of L frames, or an image: L = 1) has them
  as chunk 0 (``given = L``, kept as they are), and chunk k >= 1 appends frames
  [L + 8(k-1), L + 8k), conditioned on the 8 frames before them; with L < 8 the conditioning
  frames reach before the video's start (``start < 0``) and are the first frame repeated::

    given = 12     0       8  12      20      28
    chunk 0        [===========]                                    keeps 0..11 (the clip)
    chunk 1            [cccccccc=======]                            keeps 12..19
    chunk 2                    [cccccccc=======]                    keeps 20..27

refine (F = 24, O = 8)::

    video frames   0       8       16      24      32      40
    chunk 0        [=======================]
    chunk 1                        [=======================]
    chunk 2                                        [=======...       (truncated at the video's end)

  Every frame is refined; frames in an overlap are denoised by both chunks and merged by
  randomized blending (Eq. 8). The last chunk is cut at the video's end (it keeps at least
  O + 1 frames), so overlaps never exceed O and a chunk's two overlaps never meet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from models.errors import require


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first video frame the chunk covers
    stop: int  # one past the last video frame the chunk covers (may pass the video's end: extend)
    keep_start: int  # first video frame this chunk contributes (earlier ones belong to the previous chunk)
    keep_stop: int  # one past the last video frame this chunk contributes

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def kept_slice(self) -> slice:
        """The kept frames, as a slice of the chunk's own frame axis."""
        return slice(self.keep_start - self.start, self.keep_stop - self.start)


@dataclass(frozen=True)
class Overlap:
    left: int  # chunk index
    right: int
    start: int  # video frames [start, stop) are covered by both chunks
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ChunkPlan:
    num_frames: int
    chunk_frames: int
    overlap: int
    truncate_last: bool  # refine: cut the last chunk at the video's end; extend: generate it whole
    given: int = 0  # extend: frames that start the video as given (chunk 0); 0: generated

    def __post_init__(self) -> None:
        require(self.chunk_frames >= 2, "chunk_frames", self.chunk_frames, "an integer >= 2")
        require(0 <= self.overlap < self.chunk_frames, "overlap", self.overlap,
                f"an integer in [0, {self.chunk_frames - 1}] (less than chunk_frames)")
        require(2 * self.overlap <= self.chunk_frames or not self.truncate_last, "overlap", self.overlap,
                f"at most chunk_frames / 2 = {self.chunk_frames // 2} so that a chunk's two overlaps do not meet")
        lowest = 1 if self.truncate_last else self.chunk_frames
        require(self.num_frames >= lowest, "num_frames", self.num_frames, f"an integer >= {lowest}")
        require(self.given == 0 or (not self.truncate_last and self.given <= self.num_frames), "given", self.given,
                f"0, or for extend at most num_frames={self.num_frames}")

    @classmethod
    def for_extend(cls, num_frames: int, chunk_frames: int = 16, cond_frames: int = 8, given: int = 0) -> "ChunkPlan":
        return cls(num_frames, chunk_frames, cond_frames, truncate_last=False, given=given)

    @classmethod
    def for_refine(cls, num_frames: int, chunk_frames: int = 24, overlap: int = 8) -> "ChunkPlan":
        return cls(num_frames, chunk_frames, overlap, truncate_last=True)

    @property
    def stride(self) -> int:
        return self.chunk_frames - self.overlap

    @cached_property
    def chunks(self) -> tuple[Chunk, ...]:
        if self.given:
            count = 1 + math.ceil((self.num_frames - self.given) / self.stride)
            first = Chunk(0, 0, self.given, 0, self.given)
            return (first, *(Chunk(k, keep - self.overlap, keep - self.overlap + self.chunk_frames, keep,
                                   min(keep + self.stride, self.num_frames))
                             for k, keep in ((k, self.given + (k - 1) * self.stride) for k in range(1, count))))
        if self.num_frames <= self.chunk_frames:
            stop = self.num_frames if self.truncate_last else self.chunk_frames
            return (Chunk(0, 0, stop, 0, self.num_frames),)
        count = 1 + math.ceil((self.num_frames - self.chunk_frames) / self.stride)
        chunks = []
        for k in range(count):
            start = k * self.stride
            stop = start + self.chunk_frames
            if self.truncate_last:
                stop = min(stop, self.num_frames)
            keep_start = 0 if k == 0 else start + self.overlap
            chunks.append(Chunk(k, start, stop, keep_start, min(start + self.chunk_frames, self.num_frames)))
        return tuple(chunks)

    @property
    def overlaps(self) -> tuple[Overlap, ...]:
        return tuple(Overlap(a.index, b.index, b.start, a.stop) for a, b in zip(self.chunks, self.chunks[1:]))

    @property
    def joins(self) -> tuple[int, ...]:
        """The first frame each chunk after the first contributes: where a video changes chunk."""
        return tuple(chunk.keep_start for chunk in self.chunks[1:])

    @property
    def generated_frames(self) -> int:
        """Frames produced before the surplus of an overshooting last chunk is dropped."""
        return self.chunks[-1].stop

    def __len__(self) -> int:
        return len(self.chunks)
