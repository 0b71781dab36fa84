"""In-memory reference implementation of the backend contract (unit tests, development).

Layer: backend. Everything lives in one process: a dict of items, a sorted key list for range
reads, a bounded event history for ``watch(start_revision=...)`` and a :class:`Fanout` for live
events. Expired items are swept at the start of every operation (emitting DELETE events), so with
a :class:`~bastion.clock.FakeClock` expiry is fully deterministic; a background sweeper (started
lazily, ``sweep_interval`` seconds) covers a quiet store under a real clock.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
from collections.abc import Sequence

from bastion.backend.base import (
    Create,
    Delete,
    Event,
    EventType,
    Item,
    Op,
    Update,
    Watcher,
    check_condition,
    prefix_end,
)
from bastion.backend.fanout import (
    Fanout,
    check_item,
    check_key,
    check_transaction,
)
from bastion.clock import Clock, SystemClock
from bastion.errors import AlreadyExists, BadParameter, CompareFailed, ConnectionProblem, NotFound
from bastion.tasks import TaskSet

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """A :class:`~bastion.backend.base.Backend` kept in process memory."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_events: int = 10_000,
        sweep_interval: float | None = 1.0,
        queue_size: int = 1024,
    ) -> None:
        if max_events < 1:
            raise BadParameter("max_events must be at least 1")
        self._clock: Clock = clock or SystemClock()
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []
        self._history: collections.deque[Event] = collections.deque(maxlen=max_events)
        self._trimmed_through = 0
        self._revision = 0
        self._fanout = Fanout(queue_size)
        self._tasks = TaskSet()
        self._sweep_interval = sweep_interval
        self._sweeper_started = False
        self._closed = False
        self._expiring: set[str] = set()
        """Keys whose item expires: what a sweep looks at (not every item, per operation)."""

    # -- internals ---------------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise ConnectionProblem("backend is closed")
        if not self._sweeper_started and self._sweep_interval is not None:
            self._sweeper_started = True
            self._tasks.spawn(self._sweep_loop(self._sweep_interval), "memory-backend-sweep")
        self._sweep()

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._sweep()

    def _sweep(self) -> None:
        if not self._expiring:
            return
        now = self._clock.now()
        items = self._items
        expired = [
            k for k in self._expiring if (when := items[k].expires) is not None and when <= now
        ]
        for k in sorted(expired):
            self._remove(k)

    def _emit(self, type_: EventType, item: Item) -> None:
        event = Event(type_, item)
        if len(self._history) == self._history.maxlen and self._history:
            self._trimmed_through = self._history[0].item.revision
        self._history.append(event)
        self._fanout.publish(event)

    def _store(self, item: Item) -> Item:
        self._revision += 1
        stored = Item(item.key, bytes(item.value), item.expires, self._revision)
        if item.key not in self._items:
            bisect.insort(self._keys, item.key)
        self._items[item.key] = stored
        if item.expires is not None:
            self._expiring.add(item.key)
        else:
            self._expiring.discard(item.key)
        self._emit(EventType.PUT, stored)
        return stored

    def _remove(self, key: str) -> None:
        del self._items[key]
        self._expiring.discard(key)
        self._keys.pop(bisect.bisect_left(self._keys, key))
        self._revision += 1
        self._emit(EventType.DELETE, Item(key, b"", None, self._revision))

    def _keys_under(self, prefix: str) -> list[str]:
        lo = bisect.bisect_left(self._keys, prefix)
        hi = bisect.bisect_left(self._keys, prefix_end(prefix))
        return self._keys[lo:hi]

    # -- the contract ------------------------------------------------------------------------

    async def get(self, key: str) -> Item:
        check_key(key)
        self._enter()
        try:
            return self._items[key]
        except KeyError:
            raise NotFound(f"key {key!r} not found", key=key) from None

    async def get_range(
        self, prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        if limit is not None and limit < 1:
            raise BadParameter("limit must be a positive integer")
        self._enter()
        keys = self._keys_under(prefix)
        if containing is not None:
            keys = [k for k in keys if containing in self._items[k].value]
        if limit is not None:
            keys = keys[:limit]
        return [self._items[k] for k in keys]

    async def create(self, item: Item) -> Item:
        check_item(item)
        self._enter()
        check_condition(Create(item), self._items.get(item.key))
        return self._store(item)

    async def put(self, item: Item) -> Item:
        check_item(item)
        self._enter()
        return self._store(item)

    async def create_batch(self, items: Sequence[Item]) -> list[Item]:
        """Create every item or none (AlreadyExists when any exists or a key repeats)."""
        keys = [item.key for item in items]
        if len(set(keys)) != len(keys):
            raise AlreadyExists("a key of the batch repeats")
        stored = await self.commit([Create(item) for item in items])
        return [item for item in stored if item is not None]

    async def commit(self, ops: Sequence[Op]) -> list[Item | None]:
        checked = check_transaction(ops)
        self._enter()
        for op in checked:  # no await below: nobody writes in between
            check_condition(op, self._items.get(op.key))
        out: list[Item | None] = []
        for op in checked:
            if isinstance(op, Delete):
                self._remove(op.key)
                out.append(None)
            else:
                out.append(self._store(op.item))
        return out

    async def update(self, item: Item, expected_revision: int | None = None) -> Item:
        check_item(item)
        self._enter()
        check_condition(Update(item, expected_revision), self._items.get(item.key))
        return self._store(item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter("compare_and_swap needs the same key in expected and replace")
        self._enter()
        current = self._items.get(expected.key)
        if current is None or current.value != bytes(expected.value):
            raise CompareFailed(
                f"key {expected.key!r} does not hold the expected value", key=expected.key
            )
        return self._store(replace)

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        check_key(key)
        self._enter()
        check_condition(Delete(key, expected_revision), self._items.get(key))
        self._remove(key)

    async def delete_range(self, prefix: str) -> int:
        self._enter()
        keys = self._keys_under(prefix)
        for k in keys:
            self._remove(k)
        return len(keys)

    async def current_revision(self) -> int:
        self._enter()
        return self._revision

    async def watch(
        self, prefixes: Sequence[str] = ("",), start_revision: int | None = None
    ) -> Watcher:
        self._enter()
        if start_revision is not None and start_revision < self._trimmed_through:
            raise CompareFailed(
                f"events after revision {start_revision} were trimmed "
                f"(history starts after {self._trimmed_through}); reload and watch again"
            )
        watcher = self._fanout.subscribe(prefixes)
        if start_revision is None:
            watcher.set_floor(self._revision)
        else:
            watcher.set_floor(start_revision)
            watcher.prime(e for e in self._history if e.item.revision > start_revision)
        return watcher

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.close()
        await self._tasks.cancel_all()
