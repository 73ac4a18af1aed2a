"""The jobs' owner in the Serve app (flows/serve_api.py): :class:`~infra.jobs.JobBoard` as a
single-replica Ray Serve deployment, so that exactly one process writes the jobs' manifest."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from ray import serve

from infra.jobs import JobBoard, QueueFull, StorageUnavailable
from models.chunk_plan import ChunkPlan
from models.request import GenerationRequest


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class JobOwner:
    """The single owner of the jobs' state (see :mod:`infra.jobs`); ``watch`` lets the SSE
    streams wait for a job's next change instead of polling.

    The board's calls that write storage run one at a time (a lock) in a worker thread, so a slow
    manifest write never blocks the replica's event loop: views, watches and the other callers
    keep being answered. Watchers are woken on the event loop, after the change is committed."""

    def __init__(self, root: str, max_queue: int) -> None:
        self.changed: dict[str, asyncio.Event] = {}
        self.lock = asyncio.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.board = JobBoard(root, max_queue, on_change=self._wake)

    def _wake(self, video_id: str) -> None:  # called in the worker thread after a commit
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_now, video_id)

    def _wake_now(self, video_id: str) -> None:
        if (event := self.changed.pop(video_id, None)) is not None:
            event.set()

    async def _board(self, method: str, *args: Any) -> Any:
        """``board.<method>(*args)`` in a worker thread, one call at a time."""
        self.loop = asyncio.get_running_loop()
        async with self.lock:
            return await asyncio.to_thread(getattr(self.board, method), *args)

    async def submit(self, params: dict) -> dict:
        try:
            submission = await self._board("submit", GenerationRequest(**params, force=True))
        except QueueFull as full:
            return {"queue_full": str(full)}
        except StorageUnavailable as error:
            return {"unavailable": str(error)}
        return {"job": submission.job, "attempt": submission.attempt}

    async def active(self) -> int:
        """Jobs queued or running (what the queue bound counts)."""
        return self.board.active()

    async def view(self, video_id: str) -> dict | None:
        # No lock: a row changes by one dict update (or is put back whole), so a view taken while
        # a write is in flight sees the row before or after the change, and never waits for it.
        return self.board.view(video_id) if self.board.has(video_id) else None

    async def watch(self, video_id: str, version: int, timeout_s: float) -> dict | None:
        """The job once its version differs from ``version`` (or after ``timeout_s``). The check
        and the registration happen on the event loop with no await between, and wake-ups are
        scheduled there after each commit, so no change is missed."""
        if self.board.has(video_id) and self.board.versions.get(video_id, 0) == version:
            event = self.changed.setdefault(video_id, asyncio.Event())
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return await self.view(video_id)

    async def cancel(self, video_id: str) -> dict:
        try:
            return await self._board("cancel", video_id)
        except StorageUnavailable as error:
            return {"unavailable": str(error)}

    async def start(self, video_id: str, attempt: int, plan: ChunkPlan) -> bool:
        return await self._board("start", video_id, attempt, plan)

    async def chunk_done(self, video_id: str, attempt: int, index: int, timings: dict) -> bool:
        return await self._board("chunk_done", video_id, attempt, index, timings)

    async def should_stop(self, video_id: str, attempt: int) -> bool:
        return self.board.should_stop(video_id, attempt)

    async def finish(self, video_id: str, attempt: int, outcome: str, error: str | None = None,
                     timings: dict | None = None, artifacts: dict | None = None) -> None:
        await self._board("finish", video_id, attempt, outcome, error, timings, artifacts)
