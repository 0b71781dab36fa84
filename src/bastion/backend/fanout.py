"""Watcher fan-out and the small pieces every backend implementation shares.

Layer: backend. This module knows events, prefixes and asyncio queues; it knows nothing about
storage. An implementation appends each committed event (in revision order) with
:meth:`Fanout.publish`; every subscribed :class:`FanoutWatcher` whose prefixes match gets it in
its own bounded buffer (cf. Teleport ``lib/backend/buffer.go``).

Rules:

* A watcher never blocks the publisher. When its buffer is full it is marked *overflowed*: it
  still yields what it buffered, then its iteration raises
  ``ConnectionProblem("watcher fell behind; re-watch from last revision")``.
* A watcher delivers revisions in strictly increasing order and drops any revision it already
  delivered, so a replay (``watch(start_revision=r)``) may overlap the live stream safely.
* ``close()`` on the watcher ends its iteration; closing the fan-out (backend shut down) makes
  iteration raise ConnectionProblem, so consumers re-watch rather than believe the stream ended.

Also here, because every implementation needs them and ``base.py`` is the frozen contract:
:func:`check_item` / :func:`check_key` (input validation -> BadParameter), :func:`to_micros` /
:func:`from_micros` (TTL encoding) and :func:`wait_event`. The engines' background loops run in a
:class:`bastion.tasks.TaskSet`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from bastion.backend.base import Delete, Event, Item, Op, check_ops
from bastion.errors import BadParameter, ConnectionProblem

__all__ = [
    "check_transaction",
    "DEFAULT_QUEUE_SIZE",
    "Fanout",
    "FanoutWatcher",
    "check_item",
    "check_key",
    "from_micros",
    "to_micros",
    "wait_event",
]

DEFAULT_QUEUE_SIZE = 1024
"""Events a watcher may have buffered before it is considered to have fallen behind."""

FELL_BEHIND = "watcher fell behind; re-watch from last revision"
BACKEND_CLOSED = "backend closed; re-watch after reconnecting"


class FanoutWatcher:
    """One subscriber: prefix filter + bounded buffer + revision de-duplication."""

    def __init__(
        self,
        fanout: Fanout,
        prefixes: Sequence[str],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        after_revision: int = 0,
    ) -> None:
        if queue_size < 1:
            raise BadParameter("watcher queue_size must be at least 1")
        self._fanout = fanout
        self.prefixes: tuple[str, ...] = tuple(prefixes)
        self._queue_size = queue_size
        self._buffer: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._last_revision = after_revision
        self._overflowed = False
        self._closed = False
        self._error: str | None = None

    @property
    def last_revision(self) -> int:
        """Revision of the last event delivered (or skipped as already seen)."""
        return self._last_revision

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefixes)  # any prefix (a tuple: one C call)

    def set_floor(self, revision: int) -> None:
        """Drop every event at or below ``revision`` (it happened before the watch started)."""
        self._last_revision = max(self._last_revision, revision)

    def offer(self, event: Event) -> None:
        """Buffer ``event`` if it matches; never blocks. Called by the fan-out only."""
        if self._closed or self._overflowed or not self.matches(event.item.key):
            return
        if len(self._buffer) >= self._queue_size:
            self._overflowed = True
        else:
            self._buffer.append(event)
        self._wakeup.set()

    def prime(self, events: Iterable[Event]) -> None:
        """Put replayed events (revision order) ahead of anything buffered live."""
        replay = [e for e in events if self.matches(e.item.key)]
        self._buffer.extendleft(reversed(replay))
        self._wakeup.set()

    def fail(self, message: str) -> None:
        """Make the iteration raise ConnectionProblem(message) once the buffer is drained."""
        self._error = self._error or message
        self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            event = self._pop_new()
            if event is not None:
                return event
            self._raise_if_broken()
            self._wakeup.clear()
            await self._wakeup.wait()

    def drain(self) -> list[Event]:
        """What ``async for`` would yield now, without waiting: the buffered events past
        :attr:`last_revision`. For a reader that keeps a copy in step with this process's
        writes (each published before the write returns: drained, nothing is missing).

        Raises:
            ConnectionProblem: the watcher fell behind or failed (as iterating would).
        """
        out = []
        while (event := self._pop_new()) is not None:
            out.append(event)
        if not self._closed:
            self._raise_if_broken()
        return out

    def _pop_new(self) -> Event | None:
        """The next buffered event past :attr:`last_revision` (older ones are dropped)."""
        while self._buffer:
            event = self._buffer.popleft()
            if event.item.revision > self._last_revision:
                self._last_revision = event.item.revision
                return event
        return None

    def _raise_if_broken(self) -> None:
        if self._overflowed:
            self._detach()
            raise ConnectionProblem(FELL_BEHIND)
        if self._error is not None:
            self._detach()
            raise ConnectionProblem(self._error)

    def _detach(self) -> None:
        self._fanout.unsubscribe(self)

    async def close(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._wakeup.set()
        self._detach()


class Fanout:
    """Distributes committed events to the watchers whose prefixes match."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._watchers: set[FanoutWatcher] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._watchers)

    def subscribe(self, prefixes: Sequence[str] = ("",), after_revision: int = 0) -> FanoutWatcher:
        """A new watcher that receives events published from now on."""
        if self._closed:
            raise ConnectionProblem(BACKEND_CLOSED)
        if isinstance(prefixes, str):
            raise BadParameter("prefixes must be a sequence of strings, not one string")
        watcher = FanoutWatcher(
            self,
            prefixes or ("",),
            queue_size=self._queue_size,
            after_revision=after_revision,
        )
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: FanoutWatcher) -> None:
        self._watchers.discard(watcher)

    def publish(self, event: Event) -> None:
        for watcher in list(self._watchers):
            watcher.offer(event)

    def publish_many(self, events: Iterable[Event]) -> None:
        """Offer each event to every watcher. A lazy batch with ``keys()`` (SQLite's
        ``create_many``: an audit batch's hundreds of events, made on demand) has only the
        events some watcher's prefix wants made."""
        watchers = list(self._watchers)  # offer() never (un)subscribes: one copy per batch
        if not watchers:
            return
        keys = getattr(events, "keys", None)
        if keys is not None and isinstance(events, Sequence):
            wanted = tuple(p for w in watchers for p in w.prefixes)
            events = [events[n] for n, key in enumerate(keys()) if key.startswith(wanted)]
        for event in events:
            for watcher in watchers:
                watcher.offer(event)

    def fail_all(self, message: str) -> None:
        """Every current watcher raises ConnectionProblem(message) after its buffer drains."""
        for watcher in list(self._watchers):
            watcher.fail(message)
        self._watchers.clear()

    def close(self) -> None:
        self._closed = True
        self.fail_all(BACKEND_CLOSED)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True when it was set.

    Uses :func:`asyncio.timeout`, not ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow
    a cancellation that races with the inner future completing, and a periodic loop that loses
    its cancellation never stops.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def check_key(key: str) -> None:
    """Keys are non-empty text without NUL (NUL is not storable in PostgreSQL text)."""
    if not isinstance(key, str) or not key:
        raise BadParameter("backend key must be a non-empty string")
    if "\x00" in key:
        raise BadParameter(f"backend key {key!r} must not contain NUL")


def check_item(item: Item) -> None:
    check_key(item.key)
    if not isinstance(item.value, bytes | bytearray | memoryview):
        raise BadParameter(f"value of {item.key!r} must be bytes")
    if item.expires is not None and item.expires.utcoffset() is None:
        raise BadParameter(f"expires of {item.key!r} must be timezone-aware (UTC)")


def check_transaction(ops: Sequence[Op]) -> list[Op]:
    """Validate the ops of a ``commit`` (keys, items, no key twice); returns them as a list."""
    out = list(ops)
    for op in out:
        if isinstance(op, Delete):
            check_key(op.key)
        else:
            check_item(op.item)
    check_ops(out)
    return out


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact, unlike a float timestamp."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
