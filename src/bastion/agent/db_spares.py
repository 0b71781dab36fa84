"""Warm spare connections of the database agent: which (database, db user) pairs keep one.

Layer: ``agent``. :class:`SparePool` decides (pure: no sockets, no timers; unit-tested with a
fake clock); :class:`WarmConnections` is its IO shell in the database agent
(:class:`bastion.agent.db_service.DbAgent`). A spare is a connection to PostgreSQL taken up to
the end of the TLS handshake with the db user's client certificate (TCP, SSLRequest, TLS; no
StartupMessage yet), so the next session of the pair only sends its StartupMessage on it.

The rules, all decided here over opaque items (the agent stores the task that makes a spare):

* a pair gets a spare only after one of its sessions opened (:meth:`SparePool.used`), at most
  one spare per pair, and at most ``max_pairs`` pairs are remembered (the least recently used
  pair is forgotten, its spare closed);
* a spare not taken before its deadline (``ttl`` after it was started, or earlier: when the
  client certificate it was made with is due for renewal, :meth:`SparePool.settle`) is closed
  by :meth:`SparePool.expire` and not replaced until the pair is used again;
* a spare is handed to one session only (:meth:`SparePool.take` removes it), and a spare whose
  connection died is forgotten (:meth:`SparePool.drop`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from bastion.clock import Clock
from bastion.errors import BastionError
from bastion.tasks import spawn
from bastion.types.database import Database

__all__ = ["Pair", "SparePool", "SpareStats", "WarmConnections"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Pair = tuple[str, str]
"""(database name, db user)."""


@dataclass(slots=True)
class SpareStats:
    """Counters (tests, debugging)."""

    made: int = 0
    """Spares started (:meth:`SparePool.put`)."""
    taken: int = 0
    """Spares handed to a session."""
    expired: int = 0
    """Spares closed unused at their deadline (or forgotten with their pair)."""
    dropped: int = 0
    """Spares forgotten because their connection died or could not be made."""
    stale: int = 0
    """Taken spares found dead or due for renewal (the session connected afresh; counted by
    the agent)."""


@dataclass(slots=True)
class _Slot(Generic[T]):
    spare: T | None = None
    deadline: datetime | None = None


@dataclass(slots=True)
class SparePool(Generic[T]):
    """At most one spare per recently used pair (see the module docstring).

    Every method returns the items the caller must close; none blocks or does IO.
    """

    ttl: timedelta = timedelta(seconds=10)
    max_pairs: int = 32
    stats: SpareStats = field(default_factory=SpareStats)
    _pairs: OrderedDict[Pair, _Slot[T]] = field(default_factory=OrderedDict)

    def used(self, pair: Pair) -> tuple[bool, list[T]]:
        """A session of ``pair`` opened: remember the pair as the most recently used.

        Returns:
            (whether to start a spare for it now, the spares of forgotten pairs to close).
        """
        slot = self._pairs.pop(pair, None) or _Slot[T]()
        self._pairs[pair] = slot
        evicted: list[T] = []
        while len(self._pairs) > self.max_pairs:
            _, old = self._pairs.popitem(last=False)
            if old.spare is not None:
                self.stats.expired += 1
                evicted.append(old.spare)
        return slot.spare is None, evicted

    def put(self, pair: Pair, spare: T, now: datetime) -> list[T]:
        """Keep ``spare`` (being made) for ``pair`` until ``now + ttl``.

        Returns:
            ``[spare]`` when the pair is no longer remembered or already has one (close it).
        """
        slot = self._pairs.get(pair)
        if slot is None or slot.spare is not None:
            return [spare]
        slot.spare, slot.deadline = spare, now + self.ttl
        self.stats.made += 1
        return []

    def settle(self, pair: Pair, spare: T, not_after: datetime) -> None:
        """The spare is made with a certificate to be renewed at ``not_after``: it expires then
        if that is before its deadline (a session never gets a spare of a renewed context)."""
        slot = self._pairs.get(pair)
        if slot is not None and slot.spare is spare and slot.deadline is not None:
            slot.deadline = min(slot.deadline, not_after)

    def take(self, pair: Pair, now: datetime) -> T | None:
        """The spare of ``pair`` for a new session, removed from the pool (None: connect fresh).
        A spare past its deadline is not handed out (:meth:`expire` closes it)."""
        slot = self._pairs.get(pair)
        if slot is None or slot.spare is None:
            return None
        if slot.deadline is not None and slot.deadline <= now:
            return None
        spare, slot.spare, slot.deadline = slot.spare, None, None
        self.stats.taken += 1
        return spare

    def drop(self, pair: Pair, spare: T) -> bool:
        """Forget ``spare`` if it is still the pair's spare (its connection died, or making it
        failed). Returns whether it was."""
        slot = self._pairs.get(pair)
        if slot is None or slot.spare is not spare:
            return False
        slot.spare, slot.deadline = None, None
        self.stats.dropped += 1
        return True

    def expire(self, now: datetime) -> list[T]:
        """Remove and return the spares past their deadline (close them)."""
        gone: list[T] = []
        for slot in self._pairs.values():
            if slot.spare is not None and slot.deadline is not None and slot.deadline <= now:
                gone.append(slot.spare)
                slot.spare, slot.deadline = None, None
        self.stats.expired += len(gone)
        return gone

    def next_deadline(self) -> datetime | None:
        """When :meth:`expire` next has something to do (None: no spare)."""
        deadlines = [s.deadline for s in self._pairs.values() if s.deadline is not None]
        return min(deadlines, default=None)

    def spare_of(self, pair: Pair) -> T | None:
        """The pair's current spare, left in the pool (tests, debugging)."""
        slot = self._pairs.get(pair)
        return None if slot is None else slot.spare

    def clear(self) -> list[T]:
        """Forget everything; returns every spare (close them)."""
        gone = [s.spare for s in self._pairs.values() if s.spare is not None]
        self._pairs.clear()
        return gone


# ---- the IO shell ------------------------------------------------------------------------------

Connect = Callable[[Database, str], Awaitable[asyncio.Transport]]
"""Connects to a database as a db user up to the end of TLS (``DbAgent._connect``)."""
RenewAt = Callable[[Database, str], Awaitable[datetime]]
"""When the client certificate a connection of (database, db user) gets now is due for renewal
(and the agent's context cache makes a new one)."""


@dataclass(slots=True)
class _Spare:
    """A connection of a (database, db user) pair up to the end of the TLS handshake."""

    transport: asyncio.Transport
    idle: _Idle
    not_after: datetime
    """When the client certificate it was made with is due for renewal."""


_Making = asyncio.Task[_Spare | None]


class WarmConnections:
    """The database agent's spare connections (PostgreSQL over TLS): makes them in the
    background, hands them to sessions, closes the unused and the dead ones; the
    :class:`SparePool` decides.

    Args:
        connect: makes a connection up to the end of TLS (a spare, or a session's when there is
            no live spare).
        renew_at: the renewal time of the certificate a new connection gets.
        timeout: the limit on making one spare.
    """

    def __init__(
        self, pool: SparePool[_Making], clock: Clock, connect: Connect, renew_at: RenewAt,
        timeout: float,
    ) -> None:  # fmt: skip
        self.pool = pool
        self._clock = clock
        self._connect = connect
        self._renew_at = renew_at
        self._timeout = timeout
        self._tasks: set[_Making] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def connection(self, db: Database, user: str) -> asyncio.Transport:
        """A connection for a session of (db, user) up to the end of TLS: the pair's spare if
        it has a live one, else a new one; then the pair gets its next spare.

        Raises:
            what ``connect`` raises (no live spare, and a new connection failed).
        """
        pair = (db.metadata.name, user)
        self._sweep()
        making = self.pool.take(pair, self._clock.now())
        server = await self._claim(making) if making is not None else None
        if server is None:
            server = await self._connect(db, user)
        start, evicted = self.pool.used(pair)
        for old in evicted:
            _discard(old)
        if start:
            self._start(db, pair)
        return server

    async def close(self) -> None:
        """Close every spare (the agent stops)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for making in self.pool.clear():
            _discard(making)

    async def _claim(self, making: _Making) -> asyncio.Transport | None:
        """The transport of a taken spare (waiting for it if still being made); None when it
        failed, died or was made with a certificate due for renewal."""
        try:
            spare = await making
        except asyncio.CancelledError:
            making.add_done_callback(_close_result)
            raise
        if spare is None:
            return None
        if spare.idle.lost or spare.transport.is_closing() or (
            spare.not_after <= self._clock.now()
        ):  # fmt: skip
            self.pool.stats.stale += 1
            spare.transport.close()
            return None
        return spare.transport

    def _start(self, db: Database, pair: Pair) -> None:
        making: _Making = spawn(self._make(db, pair[1]), f"db-spare-{pair[0]}")
        self._tasks.add(making)
        making.add_done_callback(self._tasks.discard)
        for extra in self.pool.put(pair, making, self._clock.now()):
            _discard(extra)
        making.add_done_callback(lambda task: self._made(pair, task))
        self._arm()

    async def _make(self, db: Database, user: str) -> _Spare | None:
        try:
            async with asyncio.timeout(self._timeout):
                not_after = await self._renew_at(db, user)
                transport = await self._connect(db, user)
        except (BastionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("db agent: no spare connection to %s as %s: %s", db.metadata.name, user, exc)
            return None
        except Exception:  # a background extra: the next session connects afresh
            log.exception("db agent: spare connection to %s failed", db.metadata.name)
            return None
        idle = _Idle()
        transport.set_protocol(idle)
        return _Spare(transport, idle, not_after)

    def _made(self, pair: Pair, making: _Making) -> None:
        if making.cancelled():
            return
        spare = making.result()
        if spare is None:
            self.pool.drop(pair, making)
            return
        self.pool.settle(pair, making, spare.not_after)

        def lost() -> None:
            if self.pool.drop(pair, making):
                spare.transport.close()

        spare.idle.on_lost = lost
        if spare.idle.lost or spare.transport.is_closing():
            lost()

    def _arm(self) -> None:
        if self._sweeper is not None:
            return
        deadline = self.pool.next_deadline()
        if deadline is not None:
            delay = max(0.0, (deadline - self._clock.now()).total_seconds()) + 0.05
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._on_sweeper)

    def _on_sweeper(self) -> None:
        self._sweeper = None
        self._sweep()
        self._arm()

    def _sweep(self) -> None:
        for making in self.pool.expire(self._clock.now()):
            _discard(making)


def _discard(making: _Making) -> None:
    """Close a spare that is no longer wanted (made or still being made)."""
    making.cancel()
    making.add_done_callback(_close_result)


def _close_result(making: _Making) -> None:
    if not making.cancelled() and making.exception() is None:
        spare = making.result()
        if spare is not None:
            spare.transport.close()


class _Idle(asyncio.Protocol):
    """Holds a spare connection until a session takes it: anything from the database (an
    error, end of file) or the connection's loss means it is dead."""

    def __init__(self) -> None:
        self.lost = False
        self.on_lost: Callable[[], None] | None = None

    def _dead(self) -> None:
        if not self.lost:
            self.lost = True
            if self.on_lost is not None:
                self.on_lost()

    def data_received(self, data: bytes) -> None:
        self._dead()

    def eof_received(self) -> bool:
        self._dead()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead()
