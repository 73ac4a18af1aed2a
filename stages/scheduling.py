"""The engine's scheduling policy, free of Ray: which waiting video a free worker of a stage takes.

A video moves init -> extend -> refine (refine only when it asks for it). Each stage keeps one
queue per class: ``interactive`` (Serve requests) and ``batch`` (batch runs). A stage starts a
video only while fewer than ``max_in_flight`` videos wait for the next stage's workers:
back-pressure, so no stage piles up work the next one cannot take, whatever the pools' sizes. A free worker takes an
interactive video first, but while batch videos wait, interactive ones get at most
``interactive_share`` of the stage's starts (counted over its last ``window`` starts at which both
classes waited), so a batch keeps progressing under a steady stream of requests.

The engine (stages/engine.py) and the capacity simulator (stages/simulate.py) run this same code:
what the simulator predicts is the policy the engine applies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from models.errors import require

STAGE_ORDER = ("init", "extend", "refine")
PRIORITIES = ("interactive", "batch")


def next_stage(stage: str, refine: bool) -> str | None:
    """The stage a video goes to after ``stage`` (None: it is finished)."""
    return {"init": "extend", "extend": "refine" if refine else None, "refine": None}[stage]


@dataclass
class Scheduler:
    """Queues and running sets per stage; keys are video ids (any hashable)."""

    max_in_flight: int = 3
    interactive_share: float = 0.75
    window: int = 8
    queues: dict[str, dict[str, deque]] = field(
        default_factory=lambda: {s: {p: deque() for p in PRIORITIES} for s in STAGE_ORDER})
    running: dict[str, set] = field(default_factory=lambda: {s: set() for s in STAGE_ORDER})
    priority: dict[Hashable, str] = field(default_factory=dict)
    refines: dict[Hashable, bool] = field(default_factory=dict)
    contended: dict[str, deque] = field(default_factory=lambda: {s: deque() for s in STAGE_ORDER})

    def __post_init__(self) -> None:
        require(self.max_in_flight >= 1, "max_videos_in_flight", self.max_in_flight, "an integer >= 1")
        require(0.0 < self.interactive_share <= 1.0, "interactive_share", self.interactive_share,
                "a number in (0, 1]: the most of a stage's starts interactive requests take while batch videos wait")
        require(self.window >= 1, "window", self.window, "an integer >= 1")

    # --- what the engine tells it ---------------------------------------------------------------

    def add(self, key: Hashable, stage: str, priority: str, refine: bool) -> None:
        """Queue a video at ``stage`` (where its stored work lets it start)."""
        require(priority in PRIORITIES, "priority", priority, f"one of {list(PRIORITIES)}")
        self.priority[key], self.refines[key] = priority, refine
        self.queues[stage][priority].append(key)

    def withdraw(self, key: Hashable) -> bool:
        """Remove a queued video (cancelled before it ran); False if it is not queued."""
        for stage in STAGE_ORDER:
            queue = self.queues[stage][self.priority.get(key, "batch")]
            if key in queue:
                queue.remove(key)
                self._forget(key)
                return True
        return False

    def retry(self, key: Hashable, stage: str) -> None:
        """The video's ``stage`` failed and is tried again: first in its class's queue."""
        self.running[stage].discard(key)
        self.queues[stage][self.priority[key]].appendleft(key)

    def finish(self, key: Hashable, stage: str, ok: bool = True) -> str | None:
        """The video's ``stage`` ended: queue it at the next stage (returned) when ``ok``, else
        drop it. None: it left the engine."""
        self.running[stage].discard(key)
        nxt = next_stage(stage, self.refines[key]) if ok else None
        if nxt is None:
            self._forget(key)
        else:
            self.queues[nxt][self.priority[key]].append(key)
        return nxt

    # --- what it decides --------------------------------------------------------------------------

    def held(self, stage: str) -> int:
        """Videos a stage holds: queued or running there."""
        return sum(map(len, self.queues[stage].values())) + len(self.running[stage])

    def waiting(self, stage: str) -> int:
        return sum(map(len, self.queues[stage].values()))

    def start(self, stage: str) -> Hashable | None:
        """The video a free worker of ``stage`` starts now (marked running), or None: nothing
        waits, or the next stage is full."""
        queues = self.queues[stage]
        if not (queues["interactive"] or queues["batch"]):
            return None
        downstream = {"init": "extend", "extend": "refine"}.get(stage)
        if downstream is not None and self.waiting(downstream) >= self.max_in_flight:
            return None
        if queues["interactive"] and queues["batch"]:
            recent = list(self.contended[stage])[-(self.window - 1):] if self.window > 1 else []
            interactive = sum(p == "interactive" for p in recent) + 1 <= self.interactive_share * self.window
            chosen = "interactive" if interactive else "batch"
            self.contended[stage].append(chosen)
            while len(self.contended[stage]) > self.window:
                self.contended[stage].popleft()
        else:
            chosen = "interactive" if queues["interactive"] else "batch"
        key = queues[chosen].popleft()
        self.running[stage].add(key)
        return key

    def _forget(self, key: Hashable) -> None:
        self.priority.pop(key, None)
        self.refines.pop(key, None)
