"""The jobs of the HTTP service (flows/serve_api.py): their state, kept in a
:class:`~infra.manifest.BatchManifest` and committed to storage on every change, and where their
chunk MP4s live.

A job is one :class:`~models.request.GenerationRequest`; its id is the request's ``video_id`` (a
hash of every parameter), so an identical resubmission is the same job. The API's statuses are
stored in the manifest's columns as follows::

    API status   manifest status   stage columns (init / extend / refine)
    queued       pending           pending
    running      running           the stage at work is running
    done         done              done (refine: skipped when not requested)
    failed       failed            the stage at work is failed, ``error`` says why
    cancelled    skipped           the stage at work is skipped, ``error`` is CANCELLED

(skipped is the manifest's "no run picks this up again"; the service never skips otherwise.)

Every call from the generation replica carries the job's attempt number (the ``attempts``
column, raised each time the job is queued): a late report of an older attempt, e.g. one that
was cancelled and resubmitted, is ignored and told to stop. :class:`JobBoard` is plain Python;
:class:`flows.serve_jobs.JobOwner` is its single-replica Serve deployment, so that exactly one
process writes the manifest, and the one that dispatches the queued jobs.

A running job holds a lease that its generator renews with every report (a heartbeat, each
denoising step, each chunk). A job whose lease expires, or whose generator call ends without
finishing it (the replica died), is lost: it is queued again as a new attempt, which resumes
after its last finished chunk (its old attempt, if still alive somewhere, is told to stop), up to
``max_redispatch`` times, then it fails with :data:`LOST`. Leases live in memory: a restarted
owner gives every running job a fresh one (its generator, if alive, keeps reporting into the new
owner), and queued jobs are dispatched again from the manifest, so no job is left queued or
running with nobody working on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from typing import Any

from infra import storage
from infra.manifest import STAGE_STATUS_COLUMNS, TIMING_COLUMNS, BatchManifest
from infra.run_store import RunStore
from models.chunk_plan import ChunkPlan
from models.presets import get_preset
from models.request import GenerationRequest

API_STATUS = {"pending": "queued", "running": "running", "done": "done", "failed": "failed", "skipped": "cancelled"}
ACTIVE = ("pending", "running")  # what counts against the queue bound
FINISHED = ("done", "failed", "skipped")
CANCELLED = "cancelled by the client"
LOST = "generation lost"  # the start of the error of a job that was lost more than max_redispatch times
STAGES = ("init", "extend", "refine")


class StorageUnavailable(Exception):
    """The jobs' manifest could not be written. Nothing changed (memory is rolled back to what
    storage holds); the client should retry later."""


class QueueFull(Exception):
    """The bounded queue is full: the client should retry later."""

    def __init__(self, active: int, limit: int) -> None:
        self.active = active
        self.limit = limit
        super().__init__(f"{active} jobs queued or running (at most {limit})")


@dataclass(frozen=True)
class Submission:
    job: dict[str, Any]  # the API view of the job
    attempt: int | None  # the attempt to run now, or None when the job is already queued, running or done


class JobBoard:
    """The jobs of one service, as rows of the manifest at ``<root>/manifest.parquet``.

    A restarted service reads the manifest back: finished jobs answer as before, queued jobs are
    to be dispatched again (:meth:`queued`), running ones get a fresh lease of ``lease_s``
    seconds. ``on_change(job_id)`` is called after every committed change; ``clock`` gives
    seconds (monotonic) for the leases.
    """

    def __init__(self, root: str, max_queue: int = 8, batch_id: str = "serve",
                 on_change: Callable[[str], None] = lambda job_id: None, lease_s: float = 60.0,
                 max_redispatch: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.uri = storage.join(root, "manifest.parquet")
        self.max_queue = max_queue
        self.on_change = on_change
        self.lease_s = lease_s
        self.max_redispatch = max_redispatch
        self.clock = clock
        self.manifest = BatchManifest.read(self.uri) if storage.exists(self.uri) else BatchManifest(batch_id)
        self.plans: dict[str, ChunkPlan] = {}  # chunk plan of each job, reported by the generator
        self.cancel_requested: set[str] = set()
        self.versions: dict[str, int] = {}  # bumped on every change: what a watcher waits for
        self.leases: dict[str, float] = {vid: clock() + lease_s for vid, row in self.manifest.rows.items()
                                         if row["status"] == "running"}  # running job -> expiry
        self.redispatched: dict[str, int] = {}  # times a job was queued again since it was submitted
        self.models: str | None = None  # the generators' models fingerprint, once known
        # What storage holds, row by row: what views show (a change is seen once it is committed).
        self.committed: dict[str, dict[str, Any]] = {vid: dict(row) for vid, row in self.manifest.rows.items()}

    # --- what the HTTP side asks -------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Submission:
        """Queue ``request``, or return its job if it is already queued, running or done.

        A failed or cancelled job is queued again (a new attempt, resuming from its chunks), and so
        is a done one that other models made (``models``; its stored work is discarded).
        Raises :class:`QueueFull` when ``max_queue`` jobs are queued or running.
        """
        vid = request.video_id
        row = self.manifest.rows.get(vid)
        same_models = row is not None and self.models in (None, row["models"])
        if row is not None and (row["status"] in ACTIVE or row["status"] == "done" and same_models):
            return Submission(self.view(vid), None)
        active = self.active()
        if active >= self.max_queue:
            raise QueueFull(active, self.max_queue)
        attempt = self._queue(request)
        self.redispatched.pop(vid, None)
        return Submission(self.view(vid), attempt)

    def queued(self) -> list[tuple[str, int]]:
        """The queued jobs and their attempts: what the owner dispatches (all of them after a restart)."""
        return [(vid, row["attempts"]) for vid, row in self.manifest.rows.items() if row["status"] == "pending"]

    def request(self, vid: str) -> GenerationRequest:
        return self.manifest.request(vid)

    def purge(self, vids: list[str]) -> list[str]:
        """Remove finished jobs: their rows go to a history file (``<root>/history/``, one file per
        purge, so the manifest stays as small as the jobs kept), then their files are deleted,
        then the manifest is committed without them. Jobs that are not finished are left alone;
        returns the ids purged. A purge that stops half way is completed by the next one (a row
        then appears in two history files)."""
        gone = [vid for vid in vids if self.manifest.rows.get(vid, {}).get("status") in FINISHED]
        if not gone:
            return []
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        history = BatchManifest(self.manifest.batch_id, {vid: self.manifest.rows[vid] for vid in gone})
        try:
            history.write(storage.join(self.root, "history", f"jobs-{stamp}-{uuid.uuid4().hex[:8]}.parquet"))
            for vid in gone:
                for uri in RunStore(self.root, vid).files:
                    storage.remove(uri)
        except Exception as error:
            raise StorageUnavailable(f"the jobs could not be removed ({type(error).__name__}); retry later") from error
        saved = {vid: self.manifest.rows.pop(vid) for vid in gone}
        try:
            self.manifest.write(self.uri)
        except Exception as error:
            self.manifest.rows.update(saved)
            raise StorageUnavailable(f"the job state could not be saved ({type(error).__name__}); nothing "
                                     "changed, retry later") from error
        for vid in gone:  # finished: no stream waits on them
            self.committed.pop(vid, None)
            self.plans.pop(vid, None)
            self.versions.pop(vid, None)
        return gone

    def expired(self, retention_s: float) -> list[str]:
        """Finished jobs last changed more than ``retention_s`` seconds ago."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=retention_s)
        return [vid for vid, row in self.manifest.rows.items() if row["status"] in FINISHED
                and row["updated_at"] < cutoff]

    def cancel(self, vid: str) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one is asked to stop (the generator checks
        between denoising steps and reports back, then its status is cancelled)."""
        status = self.manifest.rows[vid]["status"]
        if status == "pending":
            self._finish(vid, "cancelled")
        elif status == "running" and vid not in self.cancel_requested:
            self.cancel_requested.add(vid)  # in memory only: nothing to write, the watchers are told
            self._changed(vid)
        return self.view(vid)

    def active(self) -> int:
        """Jobs queued or running: what counts against ``max_queue``."""
        return sum(r["status"] in ACTIVE for r in self.manifest.rows.values())

    def recent(self, limit: int) -> list[str]:
        """The ids of the ``limit`` most recently submitted jobs, newest first."""
        rows = sorted(self.committed.values(), key=lambda row: (row["created_at"], row["video_id"]), reverse=True)
        return [row["video_id"] for row in rows[:limit]]

    def has(self, vid: str) -> bool:
        return vid in self.committed

    def view(self, vid: str) -> dict[str, Any]:
        """The job as the API shows it: as committed to storage."""
        row = self.committed[vid]
        running = [s for s in STAGES if row[f"{s}_status"] == "running"]
        plan = self.plans.get(vid) or self._preset_plan(row)
        chunks = [] if plan is None else plan.chunks[:row["chunks_done"]]
        return {
            "id": vid,
            "prompt": row["prompt"],
            "params": self.request(vid).params(),  # what a resubmission sends (the same job)
            "status": API_STATUS[row["status"]],
            "stage": running[0] if running and row["status"] == "running" else None,
            "chunks_done": row["chunks_done"],
            "chunks_total": row["chunks_total"],
            "chunks": [{"index": c.index, "frames": [c.keep_start, c.keep_stop]} for c in chunks],
            "timings": {name: row[name] for name in TIMING_COLUMNS if row[name] is not None},
            "error": row["error"],
            "cancel_requested": vid in self.cancel_requested,
            "attempts": row["attempts"],
            "num_frames": row["num_frames"],
            "fps": row["fps"],
            "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat(),
            "version": self.versions.get(vid, 0),
            "video_uri": row["video_uri"] if row["status"] == "done" else None,
        }

    # --- what the generation replica reports ---------------------------------------------------

    def start(self, vid: str, attempt: int, plan: ChunkPlan) -> bool:
        """The generator picked the job up; False: do not run it (cancelled or superseded)."""
        if self.should_stop(vid, attempt) or self.manifest.rows[vid]["status"] != "pending":
            return False
        self._apply(vid, lambda: self.manifest.update(vid, status="running", init_status="running",
                                                      chunks_total=len(plan.chunks)))
        self.plans[vid] = plan
        self.leases[vid] = self.clock() + self.lease_s
        return True

    def chunk_done(self, vid: str, attempt: int, index: int, timings: dict[str, float]) -> bool:
        """Low-res chunk ``index`` is in storage (latents and its MP4); returns should_stop."""
        if self._stale(vid, attempt):
            return True
        row = self.manifest.rows[vid]
        last = index + 1 == row["chunks_total"]
        stages = {"init_status": "done", "extend_status": "done" if last else "running"}
        if last and row["refine_status"] != "skipped":
            stages["refine_status"] = "running"
        self._apply(vid, lambda: self.manifest.update(vid, chunks_done=index + 1, **stages, **timings))
        return self.should_stop(vid, attempt)

    def should_stop(self, vid: str, attempt: int) -> bool:
        """Whether the attempt should stop; any report of the live attempt renews its lease."""
        if self._stale(vid, attempt):
            return True
        if vid in self.leases:
            self.leases[vid] = self.clock() + self.lease_s
        return vid in self.cancel_requested

    def lost(self, vid: str, attempt: int, reason: str) -> int | None:
        """The attempt's generator call ended without finishing the job (the replica died).
        Returns the attempt to dispatch, or None. A call that failed before the job started (a
        replica that died while the call waited for it) leaves the job queued as it is: the same
        attempt is dispatched again and nothing counts. A running job is queued again as a new
        attempt or, past ``max_redispatch``, fails. A no-op (None) for an attempt that is not live."""
        if vid not in self.manifest.rows or self._stale(vid, attempt):
            return None
        if self.manifest.rows[vid]["status"] == "pending":
            return attempt
        return self._lose(vid, reason)

    def expire(self) -> list[tuple[str, int]]:
        """Every running job whose lease has expired is lost (see :meth:`lost`); returns the
        (job, attempt) pairs queued again."""
        now = self.clock()
        requeued = []
        for vid in [vid for vid, until in self.leases.items() if until < now]:
            try:
                attempt = self._lose(vid, f"no report from its generator for {self.lease_s:g} s")
            except StorageUnavailable:  # nothing changed: the next sweep tries again
                continue
            if attempt is not None:
                requeued.append((vid, attempt))
        return requeued

    def finish(self, vid: str, attempt: int, outcome: str, error: str | None = None,
               timings: dict[str, float] | None = None, artifacts: dict[str, str] | None = None) -> None:
        """outcome: done, failed or cancelled (ignored once the attempt has ended)."""
        if not self._stale(vid, attempt) and self.manifest.rows[vid]["status"] in ACTIVE:
            self._finish(vid, outcome, error, timings or {}, artifacts or {})

    # --- inside ----------------------------------------------------------------------------------

    def _queue(self, request: GenerationRequest) -> int:
        """Queue ``request``'s job as a new attempt (resuming from its chunks); returns the attempt."""
        vid = request.video_id
        row = self.manifest.rows.get(vid)
        attempt = (0 if row is None else row["attempts"]) + 1
        stages = {f"{s}_status": "pending" for s in STAGES if not (s == "refine" and not request.refine)}

        def queue() -> None:
            if vid not in self.manifest.rows:
                self.manifest.rows[vid] = BatchManifest.create(self.manifest.batch_id, [request]).rows[vid]
            self.manifest.update(vid, status="pending", attempts=attempt, error=None, chunks_done=0, **stages)

        self._apply(vid, queue)
        self.leases.pop(vid, None)
        self.cancel_requested.discard(vid)
        self.plans.pop(vid, None)
        return attempt

    def _lose(self, vid: str, reason: str) -> int | None:
        """Queue a lost job again, or fail it once it was lost ``max_redispatch`` times."""
        times = self.redispatched.get(vid, 0)
        if vid in self.cancel_requested:  # it was being cancelled: it is
            self._finish(vid, "cancelled")
            return None
        if times >= self.max_redispatch:
            self._finish(vid, "failed", f"{LOST}: {reason} (queued again {times} times)")
            return None
        attempt = self._queue(self.manifest.request(vid))
        self.redispatched[vid] = times + 1
        return attempt

    def _stale(self, vid: str, attempt: int) -> bool:
        """A report of an attempt that is not the job's live one: superseded (queued again, e.g.
        after its lease expired while its generator still ran), or ended."""
        row = self.manifest.rows[vid]
        return row["attempts"] != attempt or row["status"] not in ACTIVE

    def _finish(self, vid: str, outcome: str, error: str | None = None, timings: dict[str, float] | None = None,
                artifacts: dict[str, str] | None = None) -> None:
        status = {"done": "done", "failed": "failed", "cancelled": "skipped"}[outcome]
        if outcome == "cancelled":
            error = CANCELLED
        stage_statuses = self._stage_statuses(vid, status)
        self._apply(vid, lambda: self.manifest.update(vid, status=status, error=error, **stage_statuses,
                                                      **(timings or {}), **(artifacts or {})))
        self.cancel_requested.discard(vid)
        self.leases.pop(vid, None)

    def _stage_statuses(self, vid: str, outcome: str) -> dict[str, str]:
        """The stage columns when the job ends with ``outcome``: the unfinished stages take it."""
        row = self.manifest.rows[vid]
        return {c: outcome for c in STAGE_STATUS_COLUMNS if row[c] in ("pending", "running")}

    def _preset_plan(self, row: dict[str, Any]) -> ChunkPlan | None:
        """The chunk plan of a job read back from the manifest (no generator has reported one in
        this process): the geometry of its preset."""
        if row["chunks_done"] == 0:
            return None
        return get_preset(row["preset"]).extend_plan(row["num_frames"], row.get("init_frames") or 0)

    def _apply(self, vid: str, change: Callable[[], None]) -> None:
        """Make ``change`` to job ``vid``'s row and commit the manifest; if the write fails, the
        row is put back as storage holds it and :class:`StorageUnavailable` is raised, so memory
        never runs ahead of storage (a job is never queued, started or ended only in memory)."""
        saved = dict(self.manifest.rows[vid]) if vid in self.manifest.rows else None

        def restore() -> None:
            if saved is None:
                self.manifest.rows.pop(vid, None)
            else:
                self.manifest.rows[vid] = saved

        try:
            change()
        except Exception:
            restore()
            raise
        try:
            self.manifest.write(self.uri)
        except Exception as error:
            restore()
            raise StorageUnavailable(f"the job state could not be saved ({type(error).__name__}); nothing "
                                     "changed, retry later") from error
        self.committed[vid] = dict(self.manifest.rows[vid])
        self._changed(vid)

    def _changed(self, vid: str) -> None:
        self.versions[vid] = self.versions.get(vid, 0) + 1
        self.on_change(vid)


def chunk_video_uri(root: str, video_id: str, index: int) -> str:
    """Where the MP4 of low-res chunk ``index`` (the frames it appended) lives."""
    return RunStore(root, video_id).chunk_preview(index)
