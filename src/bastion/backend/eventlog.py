"""The change feed both SQL engines keep, and how it reaches watchers.

Layer: backend (IO shell helpers; above :mod:`.fanout`, below the engines). SQLite and
PostgreSQL record changes the same way: each write inserts a row into
``events(id, type, key, value, expires)`` in its own transaction, the event id *is* the revision,
and ``meta.trimmed_through`` remembers the highest id trimmed away. Everything that follows from
that layout lives here, once:

* :meth:`EventLog.poll`: read ``id > last_seen`` in batches into the :class:`Fanout`; when a trim
  overtook the poller, fail every watcher (they cannot be told what they missed; they reload).
* :meth:`EventLog.watch`: start at the head, or replay from a revision unless that history was
  trimmed (``CompareFailed``).
* :meth:`EventLog.trim_if_due` and :func:`trim_horizon`: keep the newest ``retention`` events,
  at most once per ``trim_interval``.
* :func:`row_event`: one events row -> :class:`Event`.

What differs between the engines is the SQL dialect and how a statement runs (a worker thread
over ``sqlite3``, an ``asyncpg`` pool, each with its own error mapping). So each driver supplies
its statements as an :class:`EventLogSQL` and runs them behind the small :class:`EventSource`
protocol; this module never touches a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from bastion.backend.base import Event, EventType, Item, Watcher
from bastion.backend.fanout import Fanout
from bastion.errors import CompareFailed

__all__ = [
    "POLL_BATCH",
    "EventLog",
    "EventLogSQL",
    "EventSource",
    "row_event",
    "trim_horizon",
]

_log = structlog.stdlib.get_logger(__name__)

POLL_BATCH = 1000
"""Events read per query by the poller (it loops until a batch comes back short)."""


@dataclass(frozen=True, slots=True)
class EventLogSQL:
    """One dialect's statements over ``events`` and ``meta`` (placeholders are the driver's)."""

    insert: str
    """``(type, key, value, expires)`` -> the new event's id."""
    after: str
    """``(revision, limit)`` -> ``id, type, key, value, expires`` rows with ``id > revision``,
    by id (the driver passes its own "no limit")."""
    trimmed: str
    """``()`` -> ``meta.trimmed_through``."""
    bounds: str
    """``()`` -> ``(min(id), max(id))`` of ``events`` (both NULL when empty)."""
    delete_through: str
    """``(horizon)``: delete the events with ``id <= horizon``."""
    raise_trimmed: str
    """``(horizon)``: ``meta.trimmed_through = max(trimmed_through, horizon)``."""
    head: str
    """``()`` -> the current revision: the highest id ever issued (trimmed or not)."""


class EventSource(Protocol):
    """A driver's :class:`EventLogSQL` run on its own connections (errors already mapped)."""

    async def events_after(self, revision: int, limit: int | None) -> tuple[int, list[Event]]:
        """``(trimmed_through, events with id > revision)`` read from one snapshot."""
        ...

    async def head(self) -> int:
        """The current revision (:attr:`EventLogSQL.head`)."""
        ...

    async def trim(self, retention: int) -> int:
        """Apply :func:`trim_horizon` in one transaction; the horizon, or 0 when nothing went."""
        ...


def trim_horizon(low: int | None, high: int | None, retention: int) -> int | None:
    """The id through which to delete so that the newest ``retention`` events remain.

    Returns:
        ``None`` when the table is empty or nothing would be deleted.
    """
    if low is None or high is None or low > high - retention:
        return None
    return high - retention


def row_event(id_: int, type_: str, key: str, value: bytes, expires: datetime | None) -> Event:
    """An events row as the :class:`Event` watchers get (the id is the item's revision)."""
    return Event(EventType(type_), Item(key, bytes(value), expires, id_))


class EventLog:
    """The watcher side of one engine's events table: poller, replay, trim schedule.

    Args:
        source: the driver's statements, run on its connections.
        engine: ``sqlite`` or ``postgres``; prefixes the log event names.
        queue_size: events a watcher may buffer (:class:`Fanout`).
        retention: events kept by a trim.
        trim_interval: seconds between trims.
    """

    def __init__(
        self,
        source: EventSource,
        *,
        engine: str,
        queue_size: int,
        retention: int,
        trim_interval: float,
    ) -> None:
        self._source = source
        self._engine = engine
        self._retention = retention
        self._trim_interval = trim_interval
        self.fanout = Fanout(queue_size)
        self._last_seen = 0
        self._next_trim = 0.0

    async def start(self) -> None:
        """Begin at the current head (earlier events are history, read by ``watch``) and
        schedule the first trim one interval from now."""
        self._last_seen = await self._source.head()
        self._next_trim = asyncio.get_running_loop().time() + self._trim_interval

    async def head(self) -> int:
        """The current revision (the contract's ``current_revision``)."""
        return await self._source.head()

    async def poll(self) -> None:
        """Publish every event committed since the last poll, in id order."""
        while True:
            trimmed, events = await self._source.events_after(self._last_seen, POLL_BATCH)
            if self._last_seen < trimmed:
                # We slept through a trim: watchers cannot be told what they missed.
                _log.warning(
                    f"{self._engine}_watchers_reset", last_seen=self._last_seen, trimmed=trimmed
                )
                self.fanout.fail_all("events were trimmed before delivery; reload and re-watch")
                self._last_seen = trimmed
                continue
            if not events:
                return
            self._publish(events)
            if len(events) < POLL_BATCH:
                return

    def _publish(self, events: Sequence[Event]) -> None:
        """Publish the events after :attr:`last_seen` and move it forward (never back): a read
        that overlapped a writer's own :meth:`deliver` may repeat some."""
        last = self._last_seen
        if events and events[-1].item.revision > last:
            fresh = (
                events
                if events[0].item.revision > last
                else [e for e in events if e.item.revision > last]
            )
            self.fanout.publish_many(fresh)
            self._last_seen = events[-1].item.revision

    @property
    def last_seen(self) -> int:
        """The revision through which events were published."""
        return self._last_seen

    def deliver(self, trimmed: int, events: Sequence[Event], limit: int) -> bool:
        """Publish what a writer read right after its commit: ``(trimmed_through, events with
        id > r)`` from one snapshot, for an ``r`` at or below :attr:`last_seen` when the read
        was asked for (at most ``limit`` events). Saves the poller's round trip for local
        writes; events already published are skipped (watchers drop repeats anyway).

        Returns:
            False when :meth:`poll` must run now: a trim overtook the read (the poll resets the
            watchers) or the batch was full (more may follow).
        """
        if self._last_seen < trimmed:
            return False
        self._publish(events)
        return len(events) < limit

    async def trim_if_due(self) -> None:
        """Trim when ``trim_interval`` has passed since the last trim (or the start)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_trim:
            self._next_trim = loop.time() + self._trim_interval
            await self._source.trim(self._retention)

    async def watch(self, prefixes: Sequence[str], start_revision: int | None) -> Watcher:
        """The contract's ``watch``: live events after the head, or a replay from
        ``start_revision`` followed by the live stream.

        Raises:
            CompareFailed: the events after ``start_revision`` were trimmed.
        """
        watcher = self.fanout.subscribe(prefixes)
        try:
            if start_revision is None:
                watcher.set_floor(await self._source.head())
                return watcher
            trimmed, events = await self._source.events_after(start_revision, None)
            if start_revision < trimmed:
                raise CompareFailed(
                    f"events after revision {start_revision} were trimmed (history starts after"
                    f" {trimmed}); reload and watch again"
                )
            watcher.set_floor(start_revision)
            watcher.prime(events)
            return watcher
        except BaseException:
            await watcher.close()
            raise

    def close(self) -> None:
        """End every watcher (they see ConnectionProblem and re-watch after reconnecting)."""
        self.fanout.close()
