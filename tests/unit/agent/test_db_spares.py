"""Tests for bastion.agent.db_spares: which pairs keep a spare, expiry, LRU (a fake clock), and
the shell that makes and hands out spares, over fake connections."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from bastion.agent.db_spares import SparePool, WarmConnections
from bastion.clock import FakeClock
from bastion.types.database import Database, DatabaseSpec
from bastion.types.meta import Metadata

A = ("pg1", "alice_db")
B = ("pg1", "bob_db")


def pool(max_pairs: int = 32) -> SparePool[str]:
    return SparePool(ttl=timedelta(seconds=10), max_pairs=max_pairs)


def test_a_pair_gets_a_spare_only_after_use_and_one_at_a_time() -> None:
    clock = FakeClock()
    spares = pool()
    assert spares.take(A, clock.now()) is None
    assert spares.put(A, "s1", clock.now()) == ["s1"]  # never used: not kept
    assert spares.used(A) == (True, [])
    assert spares.put(A, "s1", clock.now()) == []
    assert spares.used(A) == (False, [])  # it has one: no second
    assert spares.put(A, "s2", clock.now()) == ["s2"]
    assert spares.take(B, clock.now()) is None
    assert spares.take(A, clock.now()) == "s1"
    assert spares.take(A, clock.now()) is None  # never handed out twice
    assert spares.used(A) == (True, [])
    assert spares.stats.made == 1 and spares.stats.taken == 1


def test_an_unused_spare_expires_and_is_not_replaced() -> None:
    clock = FakeClock()
    spares = pool()
    spares.used(A)
    spares.put(A, "s1", clock.now())
    assert spares.next_deadline() == clock.now() + timedelta(seconds=10)
    clock.advance(9.9)
    assert spares.expire(clock.now()) == []
    clock.advance(0.1)
    assert spares.take(A, clock.now()) is None  # at its deadline: not handed out
    assert spares.expire(clock.now()) == ["s1"]
    assert spares.expire(clock.now()) == []
    assert spares.next_deadline() is None and spares.spare_of(A) is None
    assert spares.stats.expired == 1
    assert spares.used(A) == (True, [])  # used again: a new one


def test_a_spare_of_a_certificate_due_for_renewal_is_not_handed_out() -> None:
    clock = FakeClock()
    spares = pool()
    spares.used(A)
    spares.put(A, "s1", clock.now())
    spares.settle(A, "s1", clock.now() + timedelta(seconds=3))
    spares.settle(A, "other", clock.now())  # not its spare: ignored
    spares.settle(A, "s1", clock.now() + timedelta(hours=1))  # never extends
    assert spares.next_deadline() == clock.now() + timedelta(seconds=3)
    clock.advance(3)
    assert spares.take(A, clock.now()) is None
    assert spares.expire(clock.now()) == ["s1"]


def test_least_recently_used_pairs_are_forgotten() -> None:
    clock = FakeClock()
    spares = pool(max_pairs=2)
    spares.used(A)
    spares.put(A, "a", clock.now())
    spares.used(B)
    spares.put(B, "b", clock.now())
    spares.used(A)  # A is now the most recent
    assert spares.used(("pg1", "carol_db")) == (True, ["b"])
    assert spares.spare_of(B) is None and spares.spare_of(A) == "a"
    assert spares.put(B, "late", clock.now()) == ["late"]  # made after B was forgotten
    assert spares.stats.expired == 1


def test_a_dead_spare_is_dropped_once() -> None:
    clock = FakeClock()
    spares = pool()
    spares.used(A)
    spares.put(A, "s1", clock.now())
    assert not spares.drop(A, "other")
    assert spares.drop(A, "s1")
    assert not spares.drop(A, "s1")
    assert spares.take(A, clock.now()) is None
    assert spares.stats.dropped == 1
    assert spares.used(A) == (True, [])


def test_clear_returns_every_spare() -> None:
    clock = FakeClock()
    spares = pool()
    for pair, spare in ((A, "a"), (B, "b")):
        spares.used(pair)
        spares.put(pair, spare, clock.now())
    assert sorted(spares.clear()) == ["a", "b"]
    assert spares.next_deadline() is None and spares.used(A) == (True, [])


# ---- WarmConnections (the IO shell) with fake connections: no sockets ---------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


DB = Database(metadata=Metadata(name="pg1"), spec=DatabaseSpec(uri="h:1"))


def warm(
    clock: FakeClock, ttl: float = 10, dead: tuple[int, ...] = ()
) -> tuple[WarmConnections, list[FakeTransport]]:
    """The shell over fake connections (those numbered in ``dead`` are made already closed)."""
    made: list[FakeTransport] = []

    async def connect(db: Database, user: str) -> asyncio.Transport:
        made.append(FakeTransport(len(made)))
        made[-1].closed = made[-1].n in dead
        return made[-1]

    async def renew_at(db: Database, user: str) -> datetime:
        return clock.now() + timedelta(minutes=55)

    spares = SparePool[Any](ttl=timedelta(seconds=ttl))
    return WarmConnections(spares, clock, connect, renew_at, 10.0), made


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let the spare's task and its callbacks run (no wall time)


async def test_sessions_take_the_spare_made_after_the_previous_one() -> None:
    clock = FakeClock()
    conns, made = warm(clock)
    first = await conns.connection(DB, "alice_db")
    await settled()
    assert made[0] is first and conns.pool.spare_of(A) is not None
    second = await conns.connection(DB, "alice_db")
    assert second is made[1]  # the spare
    third = await conns.connection(DB, "alice_db")  # the next spare, waited for
    assert third is made[2] and conns.pool.stats.taken == 2
    await settled()
    await conns.close()  # the idle spare is closed
    await settled()
    assert made[3].closed and not any(t.closed for t in made[:3])


async def test_a_dead_or_renewed_spare_is_replaced_by_a_fresh_connection() -> None:
    clock = FakeClock()
    conns, made = warm(clock, ttl=3600, dead=(1,))
    await conns.connection(DB, "alice_db")
    # Taken while being made, found dead once made: the session connects afresh.
    assert await conns.connection(DB, "alice_db") is made[2]
    assert conns.pool.stats.stale == 1
    await settled()
    spare = made[3]
    assert spare.protocol is not None
    spare.protocol.connection_lost(None)  # cut while idle: dropped at once
    assert conns.pool.spare_of(A) is None and conns.pool.stats.dropped == 1
    assert await conns.connection(DB, "alice_db") is made[4]  # fresh
    await settled()
    clock.advance(timedelta(minutes=56))  # its certificate is due for renewal
    assert await conns.connection(DB, "alice_db") is made[6]
    await settled()
    assert made[5].closed and conns.pool.stats.taken == 1
    await conns.close()
