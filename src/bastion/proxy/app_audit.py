"""Batched ``app.request`` audit for the app route: one writer per app session.

Layer: ``proxy`` (IO: a background task per session). The app route queues one event per
forwarded request (:meth:`RequestAudit.add`) and goes on with the next request; the
session's writer commits what is queued in batches (every :data:`FLUSH_INTERVAL` or
:data:`MAX_BATCH` events, one audit-log transaction each through ``append_many`` (or
``emit_many``) when the emitter has it), in order, as the db route does for ``db.session.query``:

* **never lost**: a failed commit keeps the batch first in line and retries;
* **back-pressure**: above :data:`HIGH_WATER` queued events, :meth:`RequestAudit.add` waits
  until the writer is below :data:`LOW_WATER` (the client's next request waits with it);
* **before the end**: :meth:`RequestAudit.release` by the last connection of a session drains
  the writer before returning, so the caller's ``app.session.end`` follows every request
  event of the session; :meth:`RequestAudit.close` drains every writer.

A session is an app cookie session (shared by the browser's connections) or, for a
certificate, one connection.

Which requests are logged is :func:`request_audited` (pure): ``audit_requests`` ``all``,
``writes`` (non-GET/HEAD and WebSocket upgrades) or ``none``, and with ``all`` a sample
rate for reads (``app_audit_request_sample``): writes are always logged, each GET/HEAD with
that probability, and a sampled event says so (``sample_rate``, :func:`sampled_fields`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Literal

from bastion.audit.emitter import Emitter, SessionEvents
from bastion.errors import BastionError

__all__ = [
    "FLUSH_INTERVAL",
    "HIGH_WATER",
    "LOW_WATER",
    "MAX_BATCH",
    "AuditMode",
    "RequestAudit",
    "request_audited",
    "session_fields",
]

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.02
"""A writer commits its queued events at most this often..."""
MAX_BATCH = 512
"""...or as soon as this many are queued (one transaction each)."""
HIGH_WATER = 4096
"""Queued events above which requests of the session wait for the writer."""
LOW_WATER = 1024
_RETRY = 1.0
_DRAIN_TIMEOUT = 60.0


AuditMode = Literal["all", "writes", "none"]
_READS = frozenset({"GET", "HEAD"})


def request_audited(
    mode: AuditMode, sample: float, method: str, websocket: bool, draw: float
) -> bool:
    """Whether one request gets an ``app.request`` event.

    ``mode``: ``all``, ``writes`` (methods other than GET/HEAD, and WebSocket upgrades) or
    ``none``. ``sample`` (0 < sample <= 1) applies to the reads of ``all`` only: a read is
    logged when ``draw`` (uniform in [0, 1), drawn per request by the caller) is below it.
    Writes and WebSocket upgrades are never sampled away.
    """
    if mode == "none":
        return False
    if websocket or method not in _READS:
        return True
    return mode == "all" and (sample >= 1.0 or draw < sample)


def session_fields(mode: AuditMode, sample: float) -> dict[str, object]:
    """What ``app.session.start`` says about the session's request audit, so that an auditor
    knows which ``app.request`` events to expect: ``request_audit`` (the mode) and, when
    reads are sampled, ``request_sample`` (the rate; each sampled read event also carries
    ``sample_rate``)."""
    fields: dict[str, object] = {"request_audit": mode}
    if mode == "all" and sample < 1.0:
        fields["request_sample"] = sample
    return fields


class _Writer:
    __slots__ = ("events", "pending", "room", "shared", "task", "users")

    def __init__(self, shared: dict[str, object]) -> None:
        self.shared = shared
        """The attributes every event of the session has (user, session id)."""
        self.events: deque[dict[str, object]] = deque()
        self.pending = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.users = 0
        self.task: asyncio.Task[None] | None = None


class RequestAudit:
    """The per-session ``app.request`` writers of one app route."""

    def __init__(
        self,
        audit: Emitter,
        event_type: str = "app.request",
        flush_interval: float = FLUSH_INTERVAL,
        retry_delay: float = _RETRY,
    ) -> None:
        self._audit = audit
        self._type = event_type
        self._flush = flush_interval
        self._retry = retry_delay
        self._writers: dict[str, _Writer] = {}

    def acquire(self, key: str, shared: dict[str, object] | None = None) -> None:
        """A connection starts using session ``key`` (pair with :meth:`release`); each
        event of it has the attributes ``shared`` besides its own (:meth:`queue`)."""
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = _Writer(dict(shared or {}))
        writer.users += 1
        if writer.task is None or writer.task.done():
            writer.task = asyncio.ensure_future(self._run(key, writer))

    async def add(self, key: str, fields: dict[str, object]) -> None:
        """Queue one event of session ``key`` (acquired); waits while the writer is behind."""
        if self.queue(key, fields):
            await self.room(key)

    def queue(self, key: str, fields: dict[str, object]) -> bool:
        """Queue one event of session ``key`` (acquired; ``fields``: its own, beside the
        session's shared ones) without waiting; True when the
        writer is behind: the caller then awaits :meth:`room` before its next request."""
        writer = self._writers[key]
        writer.events.append(fields)
        writer.pending.set()
        if len(writer.events) > HIGH_WATER:
            writer.room.clear()
        return not writer.room.is_set()

    async def room(self, key: str) -> None:
        """Wait until the writer of session ``key`` is below :data:`LOW_WATER` again."""
        writer = self._writers.get(key)
        if writer is not None and not writer.room.is_set():
            await writer.room.wait()

    async def release(self, key: str) -> int:
        """A connection stops using session ``key``; the last one waits until every queued
        event is committed. Returns how many could not be (0 unless the writer was stuck)."""
        writer = self._writers.get(key)
        if writer is None:
            return 0
        writer.users -= 1
        if writer.users > 0:
            return 0
        writer.pending.set()
        left = await self._drain(writer)
        if writer.users == 0 and self._writers.get(key) is writer:
            del self._writers[key]
        return left

    async def close(self) -> None:
        """Drain every writer (the route is closing)."""
        writers = list(self._writers.values())
        self._writers.clear()
        for writer in writers:
            writer.users = 0
            writer.pending.set()
        for writer in writers:
            await self._drain(writer)

    def queued(self, key: str) -> int:
        writer = self._writers.get(key)
        return len(writer.events) if writer is not None else 0

    async def _drain(self, writer: _Writer) -> int:
        task = writer.task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=_DRAIN_TIMEOUT)
            if not task.done():
                log.error("app request audit stuck: %d events not audited", len(writer.events))
                task.cancel()
        return len(writer.events)

    async def _run(self, key: str, writer: _Writer) -> None:
        events = writer.events
        # One transaction per batch; the session's shared attributes are encoded once.
        session = SessionEvents(self._audit, self._type, writer.shared)
        while True:
            if not events:
                writer.room.set()
                if writer.users <= 0:
                    return
                writer.pending.clear()
                await writer.pending.wait()
                continue
            if len(events) < MAX_BATCH and writer.users > 0:
                await asyncio.sleep(self._flush)  # let a few more arrive
            batch = [events.popleft() for _ in range(min(len(events), MAX_BATCH))]
            if len(events) < LOW_WATER:
                writer.room.set()
            try:
                await session.append(batch)
            except (BastionError, OSError) as exc:
                # Not stored: first in line again, retried (nothing is dropped).
                events.extendleft(reversed(batch[session.stored :]))
                log.warning("app request audit failed; retrying: %s", exc)
                await asyncio.sleep(self._retry)
