"""The one chunk plan of extend and refine."""

from __future__ import annotations

import pytest

from models.chunk_plan import ChunkPlan
from models.errors import ConfigError


@pytest.mark.parametrize("n", [16, 24, 25, 48, 57, 240, 1200, 1201])
def test_extend_plan_keeps_every_frame_exactly_once(n):
    plan = ChunkPlan.for_extend(n)
    kept = [f for c in plan.chunks for f in range(c.keep_start, c.keep_stop)]
    assert kept == list(range(n))
    first, *rest = plan.chunks
    assert (first.start, first.stop) == (0, 16)
    for prev, chunk in zip(plan.chunks, rest):
        assert chunk.frames == 16 and chunk.start == prev.stop - 8  # conditioned on the previous 8
        assert chunk.kept_slice() == slice(8, min(16, n - chunk.start))
    assert plan.generated_frames - n < 8  # surplus of the last chunk only


def test_paper_lengths():
    assert len(ChunkPlan.for_extend(240)) == 1 + (240 - 16) // 8 == 29
    assert len(ChunkPlan.for_extend(1200)) == 149
    assert ChunkPlan.for_extend(1201).generated_frames == 1208


def test_a_shorter_video_is_a_prefix_of_a_longer_one():
    short, long = ChunkPlan.for_extend(57), ChunkPlan.for_extend(80)
    assert [(c.start, c.stop) for c in short.chunks] == [(c.start, c.stop) for c in long.chunks[:len(short)]]


@pytest.mark.parametrize("n", [1, 5, 24, 25, 40, 48, 57, 240, 1201])
def test_refine_plan_covers_the_video_with_bounded_overlaps(n):
    plan = ChunkPlan.for_refine(n)
    assert plan.chunks[0].start == 0 and plan.chunks[-1].stop == n
    for o, (a, b) in zip(plan.overlaps, zip(plan.chunks, plan.chunks[1:])):
        assert o.start == b.start and o.stop == a.stop and 1 <= o.frames <= 8
        assert b.frames > o.frames  # each chunk brings new frames
    for c in plan.chunks[:-1]:
        assert c.frames == 24


def test_joins_are_where_each_later_chunk_starts_contributing():
    assert ChunkPlan.for_extend(240).joins == tuple(range(16, 240, 8))
    assert ChunkPlan.for_extend(16).joins == ()
    assert ChunkPlan.for_refine(56).joins == (24, 40)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=15, chunk_frames=16, overlap=8, truncate_last=False), r"num_frames=15: must be an integer >= 16"),
    (dict(num_frames=40, chunk_frames=16, overlap=16, truncate_last=False), r"overlap=16: must be an integer in \[0, 15\]"),
    (dict(num_frames=40, chunk_frames=24, overlap=13, truncate_last=True), r"overlap=13: must be at most .* = 12"),
])
def test_plan_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ChunkPlan(**kwargs)
