"""The shared event log over an in-memory EventSource: poll batches, trims that overtake the
poller, watch replay, the trim rule. The engines run the same code against real SQL in
tests/contract/test_backend.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.backend.base import Event, EventType, Item
from bastion.backend.eventlog import POLL_BATCH, EventLog, row_event, trim_horizon
from bastion.errors import CompareFailed, ConnectionProblem


class ListSource:
    """Events ``1..n`` in a list; ``trimmed`` is meta.trimmed_through."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.trimmed = 0
        self.trims: list[int] = []

    def add(self, key: str) -> None:
        revision = len(self.events) + self.trimmed + 1
        self.events.append(Event(EventType.PUT, Item(key, b"v", None, revision)))

    async def events_after(self, revision: int, limit: int | None) -> tuple[int, list[Event]]:
        after = [e for e in self.events if e.item.revision > revision]
        return self.trimmed, after if limit is None else after[:limit]

    async def head(self) -> int:
        return self.events[-1].item.revision if self.events else self.trimmed

    async def trim(self, retention: int) -> int:
        self.trims.append(retention)
        return 0

    def drop_through(self, horizon: int) -> None:
        self.events = [e for e in self.events if e.item.revision > horizon]
        self.trimmed = horizon


def _log(source: ListSource) -> EventLog:
    return EventLog(source, engine="test", queue_size=5000, retention=10, trim_interval=3600)


def test_trim_horizon_keeps_the_newest_retention_events() -> None:
    assert trim_horizon(None, None, 10) is None  # empty table
    assert trim_horizon(1, 10, 10) is None  # exactly retention events: nothing goes
    assert trim_horizon(1, 11, 10) == 1
    assert trim_horizon(5, 30, 10) == 20
    assert trim_horizon(25, 30, 10) is None  # already trimmed past the horizon


def test_row_event_uses_the_id_as_revision() -> None:
    expires = datetime(2026, 1, 1, tzinfo=UTC)
    event = row_event(7, "put", "a/b", memoryview(b"x"), expires)
    assert event == Event(EventType.PUT, Item("a/b", b"x", expires, 7))
    assert row_event(8, "delete", "a/b", b"", None).type is EventType.DELETE


async def test_poll_publishes_in_batches_from_the_head_at_start() -> None:
    source = ListSource()
    source.add("old")
    log = _log(source)
    await log.start()
    watcher = await log.watch([""], None)
    for n in range(POLL_BATCH + 5):
        source.add(f"k/{n}")
    await log.poll()
    got = [await anext(aiter(watcher)) for _ in range(POLL_BATCH + 5)]
    assert [e.item.revision for e in got] == list(range(2, POLL_BATCH + 7))
    await watcher.close()


async def test_a_trim_that_overtakes_the_poller_fails_every_watcher() -> None:
    source = ListSource()
    log = _log(source)
    await log.start()
    watcher = await log.watch([""], None)
    for n in range(5):
        source.add(f"k/{n}")
    source.drop_through(3)
    await log.poll()
    with pytest.raises(ConnectionProblem, match="trimmed"):
        await anext(aiter(watcher))
    late = await log.watch([""], None)  # the poller went on from the horizon
    source.add("k/5")
    await log.poll()
    assert (await anext(aiter(late))).item.key == "k/5"
    await late.close()


async def test_watch_replays_from_a_revision_unless_it_was_trimmed() -> None:
    source = ListSource()
    for n in range(6):
        source.add(f"k/{n}")
    log = _log(source)
    await log.start()
    watcher = await log.watch(["k/"], 3)
    assert [(await anext(aiter(watcher))).item.revision for _ in range(3)] == [4, 5, 6]
    await watcher.close()
    source.drop_through(4)
    with pytest.raises(CompareFailed, match="trimmed"):
        await log.watch(["k/"], 2)
    assert await log.head() == 6


async def test_trim_is_not_due_right_after_start() -> None:
    source = ListSource()
    log = _log(source)
    await log.start()
    await log.trim_if_due()
    assert source.trims == []
    log.close()


async def test_a_writers_delivery_and_a_stale_poll_publish_each_event_once() -> None:
    """A writer hands its own events over (:meth:`EventLog.deliver`); a poll whose read
    happened before (or overlaps) them publishes nothing twice and never moves back."""
    source = ListSource()
    log = _log(source)
    await log.start()
    watcher = await log.watch([""], None)
    for n in range(3):
        source.add(f"k/{n}")
    stale = await source.events_after(log.last_seen, POLL_BATCH)  # a poll's read, in flight
    source.add("k/3")
    assert log.deliver(*(await source.events_after(0, POLL_BATCH)), POLL_BATCH)
    assert log.last_seen == 4
    assert not log.deliver(0, [], 0)  # a full batch (limit reached): the poller must run
    assert not log.deliver(9, [], POLL_BATCH)  # a trim overtook the read: the poller resets
    log._publish(stale[1])  # the stale poll result arrives late: not moved back, not re-read
    assert log.last_seen == 4
    await log.poll()
    source.add("k/4")
    await log.poll()
    got = [(await anext(aiter(watcher))).item.key for _ in range(5)]
    assert got == ["k/0", "k/1", "k/2", "k/3", "k/4"]
    await watcher.close()
