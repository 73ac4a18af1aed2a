"""The jobs' owner in the Serve app (flows/serve_api.py): :class:`~infra.jobs.JobBoard` as a
single-replica Ray Serve deployment, so that exactly one process writes the jobs' manifest."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from ray import serve

from infra.jobs import JobBoard, QueueFull, StorageUnavailable
from models.chunk_plan import ChunkPlan
from models.request import GenerationRequest


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class JobOwner:
    """The single owner of the jobs' state (see :mod:`infra.jobs`); ``watch`` lets the SSE
    streams wait for a job's next change instead of polling."""

    def __init__(self, root: str, max_queue: int) -> None:
        self.changed: dict[str, asyncio.Event] = {}
        self.board = JobBoard(root, max_queue, on_change=self._wake)

    def _wake(self, video_id: str) -> None:
        if (event := self.changed.pop(video_id, None)) is not None:
            event.set()

    # Every method is async: they run one at a time on the replica's event loop, never in threads.
    async def submit(self, params: dict) -> dict:
        try:
            submission = self.board.submit(GenerationRequest(**params, force=True))
        except QueueFull as full:
            return {"queue_full": str(full)}
        except StorageUnavailable as error:
            return {"unavailable": str(error)}
        return {"job": submission.job, "attempt": submission.attempt}

    async def view(self, video_id: str) -> dict | None:
        return self.board.view(video_id) if self.board.has(video_id) else None

    async def watch(self, video_id: str, version: int, timeout_s: float) -> dict | None:
        """The job once its version differs from ``version`` (or after ``timeout_s``)."""
        if self.board.has(video_id) and self.board.view(video_id)["version"] == version:
            event = self.changed.setdefault(video_id, asyncio.Event())
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return await self.view(video_id)

    async def cancel(self, video_id: str) -> dict:
        try:
            return self.board.cancel(video_id)
        except StorageUnavailable as error:
            return {"unavailable": str(error)}

    async def start(self, video_id: str, attempt: int, plan: ChunkPlan) -> bool:
        return self.board.start(video_id, attempt, plan)

    async def chunk_done(self, video_id: str, attempt: int, index: int, timings: dict) -> bool:
        return self.board.chunk_done(video_id, attempt, index, timings)

    async def should_stop(self, video_id: str, attempt: int) -> bool:
        return self.board.should_stop(video_id, attempt)

    async def finish(self, video_id: str, attempt: int, outcome: str, error: str | None = None,
                     timings: dict | None = None, artifacts: dict | None = None) -> None:
        self.board.finish(video_id, attempt, outcome, error, timings, artifacts)
