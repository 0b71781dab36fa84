"""Batched ``app.request`` audit for the app route: one writer per app session.

Layer: ``proxy`` (IO: a background task per session). The app route queues one event per
forwarded request (:meth:`RequestAudit.add`) and goes on with the next request; the
session's writer commits what is queued in batches (every :data:`FLUSH_INTERVAL` or
:data:`MAX_BATCH` events, one audit-log transaction each through ``emit_many`` when the
emitter has it), in order, as the db route does for ``db.session.query``:

* **never lost**: a failed commit keeps the batch first in line and retries;
* **back-pressure**: above :data:`HIGH_WATER` queued events, :meth:`RequestAudit.add` waits
  until the writer is below :data:`LOW_WATER` (the client's next request waits with it);
* **before the end**: :meth:`RequestAudit.release` by the last connection of a session drains
  the writer before returning, so the caller's ``app.session.end`` follows every request
  event of the session; :meth:`RequestAudit.close` drains every writer.

A session is an app cookie session (shared by the browser's connections) or, for a
certificate, one connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bastion.audit.emitter import Emitter
from bastion.errors import BastionError

__all__ = ["FLUSH_INTERVAL", "HIGH_WATER", "LOW_WATER", "MAX_BATCH", "RequestAudit"]

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


class _Many(Protocol):
    async def __call__(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> Any: ...


class _Writer:
    __slots__ = ("events", "pending", "room", "task", "users")

    def __init__(self) -> None:
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

    def acquire(self, key: str) -> None:
        """A connection starts using session ``key`` (pair with :meth:`release`)."""
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = _Writer()
        writer.users += 1
        if writer.task is None or writer.task.done():
            writer.task = asyncio.ensure_future(self._run(key, writer))

    async def add(self, key: str, fields: dict[str, object]) -> None:
        """Queue one event of session ``key`` (acquired); waits while the writer is behind."""
        writer = self._writers[key]
        writer.events.append(fields)
        writer.pending.set()
        if len(writer.events) > HIGH_WATER:
            writer.room.clear()
        if not writer.room.is_set():
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
        many: _Many | None = getattr(self._audit, "emit_many", None)
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
            stored = 0
            try:
                if many is not None:
                    await many([(self._type, "success", f) for f in batch])
                    stored = len(batch)
                else:
                    for f in batch:
                        await self._audit.emit(self._type, **f)  # type: ignore[arg-type]
                        stored += 1
            except (BastionError, OSError) as exc:
                # Not stored: first in line again, retried (nothing is dropped).
                events.extendleft(reversed(batch[stored:]))
                log.warning("app request audit failed; retrying: %s", exc)
                await asyncio.sleep(self._retry)
