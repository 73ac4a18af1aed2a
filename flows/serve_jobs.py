"""The jobs' owner in the Serve app (flows/serve_api.py): :class:`~infra.jobs.JobBoard` as a
single-replica Ray Serve deployment, so that exactly one process writes the jobs' manifest and
dispatches the queued jobs to the generation deployment."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from infra.jobs import JobBoard, QueueFull, StorageUnavailable
from models.chunk_plan import ChunkPlan
from models.errors import ConfigError
from models.request import GenerationRequest
from stages.pools import error_message

LOG = logging.getLogger("ray.serve")
REDISPATCH_DELAY_S = 1.0  # after a failed generation call, before the job's next one


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class JobOwner:
    """The single owner of the jobs' state (see :mod:`infra.jobs`); ``watch`` lets the SSE
    streams wait for a job's next change instead of polling.

    The board's calls that write storage run one at a time (a lock) in a worker thread, so a slow
    manifest write never blocks the replica's event loop: views, watches and the other callers
    keep being answered. Watchers are woken on the event loop, after the change is committed.

    Each queued job has one generation call in flight (``calls``); a job cancelled while queued
    withdraws its call, so the calls stay within ``max_queue``. A sweep every quarter lease
    re-queues the running jobs whose lease expired and dispatches any queued job without a call
    (e.g. after a restart of this replica)."""

    def __init__(self, root: str, max_queue: int, generator: DeploymentHandle, lease_s: float = 60.0,
                 max_redispatch: int = 2, retention_s: float = 0.0) -> None:
        self.changed: dict[str, asyncio.Event] = {}
        self.lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()  # Serve runs the constructor on the replica's event loop
        self.generator = generator
        self.retention_s = retention_s  # finished jobs older than this are purged (0: kept)
        self.calls: dict[str, asyncio.Task] = {}  # job -> its generation call in flight
        self.board = JobBoard(root, max_queue, on_change=self._wake, lease_s=lease_s, max_redispatch=max_redispatch)
        self.sweeper = self.loop.create_task(self._sweep_forever(max(lease_s / 4, 0.2)))
        self.models = self.loop.create_task(self._learn_models())

    async def _learn_models(self) -> None:
        """The generators' models fingerprint: a done job made by other models runs again."""
        try:
            self.board.models = await self.generator.models.remote()
        except Exception:  # no generator yet: done jobs answer as they are until one reports
            LOG.exception("the generators' models fingerprint is unknown")

    def _wake(self, video_id: str) -> None:  # called in the worker thread after a commit
        self.loop.call_soon_threadsafe(self._wake_now, video_id)

    def _wake_now(self, video_id: str) -> None:
        if (event := self.changed.pop(video_id, None)) is not None:
            event.set()

    async def _board(self, method: str, *args: Any) -> Any:
        """``board.<method>(*args)`` in a worker thread, one call at a time."""
        async with self.lock:
            return await asyncio.to_thread(getattr(self.board, method), *args)

    # --- dispatch ------------------------------------------------------------------------------------

    def _dispatch(self, video_id: str, attempt: int) -> None:
        """Start the generation call of the job's ``attempt`` (Serve queues it until a replica is
        free), withdrawing the job's earlier call."""
        self._withdraw(video_id)
        params = self.board.request(video_id).params()
        task = self.loop.create_task(self._generate(video_id, params, attempt))
        self.calls[video_id] = task
        task.add_done_callback(lambda done: self.calls.pop(video_id, None) if self.calls.get(video_id) is done
                               else None)

    def _withdraw(self, video_id: str) -> None:
        """Cancel the job's call in flight (a queued call leaves Serve's queue at once)."""
        task = self.calls.pop(video_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _generate(self, video_id: str, params: dict, attempt: int) -> None:
        try:
            await self.generator.run.remote(params, attempt)  # it reports the job's end itself
            return
        except asyncio.CancelledError:
            raise
        except ConfigError as error:  # the request itself is refused: the same call would fail again
            LOG.error("job %s attempt %d: refused: %s", video_id, attempt, error)
            with suppress(StorageUnavailable):  # else the lease or the sweep finds the job again
                await self._board("finish", video_id, attempt, "failed", error_message(error))
            return
        except Exception as error:  # the replica died, or the call failed before the job's end was saved
            LOG.error("job %s attempt %d: generation call failed: %r", video_id, attempt, error)
            reason = f"generation call failed: {error_message(error)}"
        finally:
            if self.calls.get(video_id) is asyncio.current_task():
                self.calls.pop(video_id)
        # Until Serve has replaced a dead replica, calls routed to it fail at once: wait a moment.
        await asyncio.sleep(REDISPATCH_DELAY_S)
        # The job is lost: dispatched again, queued again or failed (a no-op for an ended attempt).
        with suppress(StorageUnavailable):  # nothing changed; the lease or the sweep finds the job again
            again = await self._board("lost", video_id, attempt, reason)
            if again is not None:
                self._dispatch(video_id, again)

    async def _sweep(self) -> None:
        """Re-queue expired jobs, dispatch every queued job that has no call in flight, and purge
        the finished jobs past the retention time."""
        await self._board("expire")
        for video_id, attempt in self.board.queued():
            if video_id not in self.calls:
                self._dispatch(video_id, attempt)
        if self.retention_s and (old := self.board.expired(self.retention_s)):
            await self._board("purge", old)

    async def _sweep_forever(self, every_s: float) -> None:
        while True:
            try:
                await self._sweep()
            except Exception:  # e.g. storage down: the next sweep tries again
                LOG.exception("job sweep failed")
            await asyncio.sleep(every_s)

    # --- what the ingress asks ----------------------------------------------------------------------

    async def submit(self, params: dict) -> dict:
        await asyncio.wait([self.models])  # never raises: a done job is compared with the models running now
        try:
            submission = await self._board("submit", GenerationRequest(**params, force=True))
        except QueueFull as full:
            return {"queue_full": str(full)}
        except StorageUnavailable as error:
            return {"unavailable": str(error)}
        if submission.attempt is not None:
            self._dispatch(submission.job["id"], submission.attempt)
        return {"job": submission.job, "attempt": submission.attempt}

    async def load(self) -> dict[str, int]:
        """Jobs queued or running (what the queue bound counts) and generation calls in flight."""
        return {"active_jobs": self.board.active(), "dispatched_calls": len(self.calls)}

    async def view(self, video_id: str) -> dict | None:
        # No lock: a row changes by one dict update (or is put back whole), so a view taken while
        # a write is in flight sees the row before or after the change, and never waits for it.
        return self.board.view(video_id) if self.board.has(video_id) else None

    async def recent(self, limit: int) -> list[dict]:
        """The ``limit`` most recently submitted jobs, newest first (no lock, as :meth:`view`)."""
        return [self.board.view(vid) for vid in self.board.recent(limit)]

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
            job = await self._board("cancel", video_id)
        except StorageUnavailable as error:
            return {"unavailable": str(error)}
        if job["status"] == "cancelled":  # it was queued: its call leaves Serve's queue now
            self._withdraw(video_id)
        return job

    async def purge(self, video_id: str) -> dict:
        """Remove a finished job and its files: ``{"purged": bool}`` (False: it is not finished)."""
        try:
            return {"purged": bool(await self._board("purge", [video_id]))}
        except StorageUnavailable as error:
            return {"unavailable": str(error)}

    # --- what the generation replica reports --------------------------------------------------------

    async def start(self, video_id: str, attempt: int, plan: ChunkPlan) -> bool:
        return await self._board("start", video_id, attempt, plan)

    async def chunk_done(self, video_id: str, attempt: int, index: int, timings: dict) -> bool:
        return await self._board("chunk_done", video_id, attempt, index, timings)

    async def should_stop(self, video_id: str, attempt: int) -> bool:
        """Also the generator's heartbeat: renews the running job's lease (in memory, no write)."""
        return self.board.should_stop(video_id, attempt)

    async def finish(self, video_id: str, attempt: int, outcome: str, error: str | None = None,
                     timings: dict | None = None, artifacts: dict | None = None) -> None:
        await self._board("finish", video_id, attempt, outcome, error, timings, artifacts)
