"""Fan-out of events to prefix-filtered, bounded watchers (queue-only, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.backend.base import Event, EventType, Item
from bastion.backend.fanout import (
    Fanout,
    FanoutWatcher,
    check_item,
    check_key,
    from_micros,
    to_micros,
    wait_event,
)
from bastion.errors import BadParameter, ConnectionProblem


def put(key: str, revision: int) -> Event:
    return Event(EventType.PUT, Item(key, b"v", None, revision))


async def drain(watcher: FanoutWatcher, count: int) -> list[Event]:
    iterator = aiter(watcher)
    return [await anext(iterator) for _ in range(count)]


async def test_watcher_gets_only_matching_prefixes() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe(["a/", "c/"])
    for n, k in enumerate(["a/1", "ab/1", "b/1", "c/1", "a"], start=1):
        fanout.publish(put(k, n))
    assert [e.item.key for e in await drain(watcher, 2)] == ["a/1", "c/1"]


async def test_every_watcher_gets_its_own_copy() -> None:
    fanout = Fanout()
    first, second = fanout.subscribe(), fanout.subscribe(["x/"])
    fanout.publish_many([put("x/1", 1), put("y/1", 2)])
    assert [e.item.revision for e in await drain(first, 2)] == [1, 2]
    assert [e.item.revision for e in await drain(second, 1)] == [1]


async def test_overflow_delivers_buffer_then_raises() -> None:
    fanout = Fanout(queue_size=2)
    watcher = fanout.subscribe()
    fanout.publish_many(put("k", n) for n in range(1, 5))
    assert [e.item.revision for e in await drain(watcher, 2)] == [1, 2]
    with pytest.raises(ConnectionProblem, match="fell behind"):
        await anext(aiter(watcher))
    assert len(fanout) == 0


async def test_slow_watcher_does_not_affect_others() -> None:
    fanout = Fanout(queue_size=1)
    slow, fast = fanout.subscribe(), fanout.subscribe()
    fanout.publish(put("k", 1))
    assert (await anext(aiter(fast))).item.revision == 1
    fanout.publish(put("k", 2))
    fanout.publish(put("k", 3))  # slow overflows here; fast has room again after reading 2
    assert (await anext(aiter(fast))).item.revision == 2
    assert (await anext(aiter(slow))).item.revision == 1
    with pytest.raises(ConnectionProblem):
        await anext(aiter(slow))


async def test_replay_goes_first_and_duplicates_are_dropped() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe()
    watcher.set_floor(1)
    fanout.publish(put("k", 3))  # live event arrives while the replay is being read
    watcher.prime([put("k", 1), put("k", 2), put("k", 3)])
    fanout.publish(put("k", 4))
    assert [e.item.revision for e in await drain(watcher, 3)] == [2, 3, 4]


async def test_floor_hides_events_from_before_the_watch() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe()
    watcher.set_floor(5)
    fanout.publish_many([put("k", 5), put("k", 6)])
    assert (await anext(aiter(watcher))).item.revision == 6
    assert watcher.last_revision == 6


async def test_close_ends_iteration_and_unsubscribes() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe()
    fanout.publish(put("k", 1))
    await watcher.close()
    assert [e async for e in watcher] == []
    assert len(fanout) == 0
    fanout.publish(put("k", 2))  # no error publishing after a watcher left


async def test_close_wakes_a_waiting_reader() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe()
    async with asyncio.TaskGroup() as group:
        reader = group.create_task(anext(aiter(watcher), None))
        await asyncio.sleep(0)  # let the reader block (a scheduling point, not a time sleep)
        await watcher.close()
    assert reader.result() is None


async def test_fanout_close_fails_watchers_and_refuses_new_ones() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe()
    fanout.close()
    with pytest.raises(ConnectionProblem, match="closed"):
        await anext(aiter(watcher))
    with pytest.raises(ConnectionProblem):
        fanout.subscribe()


def test_subscribe_rejects_a_bare_string() -> None:
    with pytest.raises(BadParameter):
        Fanout().subscribe("a/")


def test_check_key_and_item() -> None:
    check_key("roles/dev")
    for bad in ("", "a\x00b"):
        with pytest.raises(BadParameter):
            check_key(bad)
    with pytest.raises(BadParameter, match="timezone"):
        check_item(Item("k", b"v", expires=datetime(2030, 1, 1)))  # noqa: DTZ001
    check_item(Item("k", b"v", expires=datetime(2030, 1, 1, tzinfo=UTC)))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 5, 17, 12, 30, 1, 999_999, tzinfo=UTC),
        datetime(1960, 2, 29, 0, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_micros_round_trip_exactly(moment: datetime) -> None:
    assert from_micros(to_micros(moment)) == moment


async def test_wait_event() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0) is False
    event.set()
    assert await wait_event(event, 0) is True


class _LazyBatch(Sequence[Event]):
    """A batch whose events are made on demand (as SQLite's create_many answer)."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = keys
        self.made: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, n: Any) -> Any:
        self.made.append(n)
        return Event(EventType.PUT, Item(self._keys[n], b"v", None, n + 1))

    def keys(self) -> Iterator[str]:
        return iter(self._keys)


async def test_a_lazy_batch_has_only_the_events_a_watcher_wants_made() -> None:
    fanout = Fanout()
    watcher = fanout.subscribe(["users/"])
    batch = _LazyBatch([f"audit/events/{i}" for i in range(100)] + ["users/alice"])
    fanout.publish_many(batch)
    assert batch.made == [100]
    assert [e.item.key for e in watcher.drain()] == ["users/alice"]
    fanout.publish_many(_LazyBatch(["audit/x"]))  # nothing wanted: nothing made or offered
    assert watcher.drain() == []
