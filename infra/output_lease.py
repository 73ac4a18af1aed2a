"""A lease on an output location, so that two batch runs never write one ``output_uri`` at once.

The lease is one small object, ``<output_uri>/.lease.json`` (holder, host, process, expiry),
created atomically (local: an exclusive create; S3: a conditional PUT) and renewed by its holder
every third of its time to live. A second run finds it held and either waits (``wait_s``) or
stops with an error naming the holder and when the lease expires. A run that crashed stops
renewing: once its lease has expired the next run takes it over, also atomically (the takeover
replaces the very version it read, so of two runs taking over at once exactly one wins).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from infra import storage
from models.errors import ConfigError

LEASE_NAME = ".lease.json"


class OutputBusy(ConfigError):
    """Another run holds the output location's lease."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it had expired): it must stop writing the location."""


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass
class OutputLease:
    """The lease of one run on ``output_uri``; use it as a context manager (acquire, renew in a
    background thread, release)."""

    output_uri: str
    ttl_s: float = 120.0
    wait_s: float = 0.0  # how long acquire waits for a held lease to be released or expire
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    clock: object = time.time

    def __post_init__(self) -> None:
        self.uri = storage.join(self.output_uri, LEASE_NAME)
        self.version: str | None = None  # the version of the lease object this run last wrote
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self, expires_at: float) -> bytes:
        return json.dumps({"holder": self.holder, "expires_at": expires_at, "expires": _when(expires_at),
                           "acquired_by": f"{socket.gethostname()} pid {os.getpid()}"}).encode()

    def try_acquire(self) -> dict | None:
        """Take the lease if it is free or expired; returns None when taken, else the holder's record."""
        now = self.clock()
        data = self._record(now + self.ttl_s)
        if storage.create_if_absent(self.uri, data):
            self.version = storage.read_versioned(self.uri)[1]
            return None
        current = storage.read_versioned(self.uri)
        if current is None:  # released between the two calls: try again
            return self.try_acquire()
        held = json.loads(current[0])
        if held["holder"] != self.holder and held["expires_at"] > now:
            return held
        if not storage.replace_if(self.uri, data, current[1]):  # another run took it over first
            return self.try_acquire()
        self.version = storage.read_versioned(self.uri)[1]
        return None

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait_s`` for a held one; raises :class:`OutputBusy`."""
        deadline = self.clock() + self.wait_s
        while (held := self.try_acquire()) is not None:
            if self.clock() >= deadline:
                raise OutputBusy("output_uri", self.output_uri, (
                    f"a location no other run is writing: {held['holder']} holds its lease until {held['expires']} "
                    f"({LEASE_NAME}; it is renewed while that run lives). Wait for it, use another output_uri, or "
                    "remove the lease object if that run is known to be gone"))
            time.sleep(min(5.0, max(0.05, self.ttl_s / 10)))

    def renew(self) -> None:
        """Push the expiry on; raises :class:`LeaseLost` if another run has taken the lease."""
        data = self._record(self.clock() + self.ttl_s)
        if self.version is None or not storage.replace_if(self.uri, data, self.version):
            raise LeaseLost(f"the lease on {self.output_uri} was taken over by another run")
        self.version = storage.read_versioned(self.uri)[1]

    def release(self) -> None:
        """Give the lease up (it is marked expired, so the next run takes it at once)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.version is not None and self.lost is None:
            expired = self._record(0.0)
            storage.replace_if(self.uri, expired, self.version)
        self.version = None

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the renewer found the lease taken over."""
        if self.lost is not None:
            raise self.lost

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseLost as lost:
                self.lost = lost
                return
            except Exception:  # storage hiccup: the next renewal tries again within the lease
                continue

    def __enter__(self) -> "OutputLease":
        self.acquire()
        self._renewer = threading.Thread(target=self._renew_forever, name="output-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
