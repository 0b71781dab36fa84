"""The backend compliance suite: every implementation must pass all of :data:`CASES`.

Layer: backend (test support, shipped so that out-of-tree backends can run it too; cf. Teleport's
``RunBackendComplianceSuite``). Each case is ``async def case(factory) -> None``; ``factory``
opens a *fresh, empty* backend for the given :class:`SuiteOptions` (clock, event retention) and
the case closes it. Time is a :class:`~bastion.clock.FakeClock` the case advances, so expiry is
deterministic; the implementations' own loops run in real time, so cases that wait for a loop
(expiry DELETE events, trimming, polling) wait with :func:`eventually` / timeouts, never a fixed
sleep. Failures are ``AssertionError`` with a message.

Usage::

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
    async def test_backend(case, factory):
        await case(factory)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bastion.backend.base import (
    Backend,
    Create,
    Delete,
    Event,
    EventType,
    Item,
    Put,
    Update,
    Watcher,
    create_many,
)
from bastion.clock import FakeClock
from bastion.errors import (
    AlreadyExists,
    BadParameter,
    BastionError,
    CompareFailed,
    NotFound,
)

__all__ = [
    "CASES",
    "BackendFactory",
    "ComplianceCase",
    "SuiteOptions",
    "eventually",
    "next_events",
]

WAIT = 10.0
"""Seconds a case waits for something a background loop does (generous for loaded CI)."""


@dataclass(frozen=True)
class SuiteOptions:
    """What a case asks of the backend it opens."""

    clock: FakeClock = field(default_factory=FakeClock)
    event_retention: int = 10_000
    """Events kept for ``watch(start_revision=...)``; trimming may happen at any time beyond it."""


BackendFactory = Callable[[SuiteOptions], Awaitable[Backend]]
ComplianceCase = Callable[[BackendFactory], Awaitable[None]]


@contextlib.asynccontextmanager
async def _opened(
    factory: BackendFactory, options: SuiteOptions | None = None
) -> AsyncIterator[tuple[Backend, FakeClock]]:
    options = options or SuiteOptions()
    backend = await factory(options)
    try:
        yield backend, options.clock
    finally:
        await backend.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll ``check`` until it is true; AssertionError naming ``what`` after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def next_events(watcher: Watcher, count: int, within: float = WAIT) -> list[Event]:
    """The next ``count`` events of ``watcher``, or AssertionError after ``within`` seconds."""
    iterator = aiter(watcher)
    events: list[Event] = []
    try:
        async with asyncio.timeout(within):
            while len(events) < count:
                events.append(await anext(iterator))
    except TimeoutError:
        raise AssertionError(f"got {len(events)} of {count} events: {events}") from None
    return events


async def _raises(exc: type[BastionError], call: Awaitable[object], key: str | None = None) -> None:
    """``call`` raises ``exc``; when ``key`` is given, the error names that key (``exc.key``)."""
    try:
        await call
    except exc as err:
        if key is not None and err.key != key:
            raise AssertionError(f"{exc.__name__} names key {err.key!r}, not {key!r}") from None
        return
    raise AssertionError(f"expected {exc.__name__}")


def _summary(events: list[Event]) -> list[tuple[EventType, str, bytes]]:
    return [(e.type, e.item.key, e.item.value) for e in events]


# -- CRUD ------------------------------------------------------------------------------------


async def create_get_put(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await _raises(NotFound, b.get("users/alice"))
        created = await b.create(Item("users/alice", b"v1"))
        assert created.revision > 0 and created.value == b"v1"
        got = await b.get("users/alice")
        assert (got.key, got.value, got.revision) == ("users/alice", b"v1", created.revision)
        await _raises(AlreadyExists, b.create(Item("users/alice", b"other")))
        assert (await b.get("users/alice")).value == b"v1"
        put = await b.put(Item("users/alice", b"v2"))
        assert put.revision > created.revision
        assert (await b.get("users/alice")).value == b"v2"
        fresh = await b.put(Item("users/bob", b"\x00\xffbinary"))
        assert (await b.get("users/bob")).value == b"\x00\xffbinary" == fresh.value


async def update_with_and_without_revision(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await _raises(NotFound, b.update(Item("roles/dev", b"x")))
        first = await b.create(Item("roles/dev", b"1"))
        second = await b.update(Item("roles/dev", b"2"))
        assert second.revision > first.revision
        await _raises(CompareFailed, b.update(Item("roles/dev", b"3"), first.revision))
        assert (await b.get("roles/dev")).value == b"2"
        third = await b.update(Item("roles/dev", b"3"), second.revision)
        assert (await b.get("roles/dev")).revision == third.revision
        await _raises(NotFound, b.update(Item("roles/ops", b"x"), third.revision))


async def compare_and_swap_semantics(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await _raises(CompareFailed, b.compare_and_swap(Item("k", b"a"), Item("k", b"b")))
        await b.put(Item("k", b"a"))
        await _raises(CompareFailed, b.compare_and_swap(Item("k", b"zz"), Item("k", b"b")))
        assert (await b.get("k")).value == b"a"
        swapped = await b.compare_and_swap(Item("k", b"a"), Item("k", b"b"))
        assert swapped.value == b"b" and (await b.get("k")).revision == swapped.revision
        await _raises(BadParameter, b.compare_and_swap(Item("k", b"b"), Item("other", b"c")))


async def delete_and_conditional_delete(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await _raises(NotFound, b.delete("nodes/n1"))
        first = await b.put(Item("nodes/n1", b"1"))
        second = await b.put(Item("nodes/n1", b"2"))
        await _raises(CompareFailed, b.delete("nodes/n1", expected_revision=first.revision))
        assert (await b.get("nodes/n1")).value == b"2"
        await b.delete("nodes/n1", expected_revision=second.revision)
        await _raises(NotFound, b.get("nodes/n1"))
        await b.put(Item("nodes/n2", b"x"))
        await b.delete("nodes/n2")
        await _raises(NotFound, b.delete("nodes/n2"))


async def delete_range_respects_prefix(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        for k in ("a/1", "a/2", "a/sub/3", "ab/1", "a", "b/1"):
            await b.put(Item(k, b"x"))
        assert await b.delete_range("a/") == 3
        assert [i.key for i in await b.get_range("")] == ["a", "ab/1", "b/1"]
        assert await b.delete_range("nothing/") == 0


async def get_range_prefix_boundaries_and_limit(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        keys = ["a/2", "a/1", "ab/1", "a", "a/\u00e9", "a/Z", "b/1", "a/10"]
        for k in keys:
            await b.put(Item(k, k.encode()))
        under_a = [i.key for i in await b.get_range("a/")]
        assert under_a == sorted(k for k in keys if k.startswith("a/")), under_a
        assert [i.key for i in await b.get_range("ab/")] == ["ab/1"]
        assert [i.key for i in await b.get_range("")] == sorted(keys)
        assert [i.key for i in await b.get_range("a/", limit=2)] == ["a/1", "a/10"]
        assert await b.get_range("c/") == []
        items = await b.get_range("b/")
        assert items[0].value == b"b/1" and items[0].revision > 0
        # containing: only the values that hold the bytes, filtered where they are stored
        assert [i.key for i in await b.get_range("a/", containing=b"/1")] == ["a/1", "a/10"]
        assert [i.key for i in await b.get_range("", containing=b"Z")] == ["a/Z"]
        assert [i.key for i in await b.get_range("a/", limit=1, containing=b"0")] == ["a/10"]
        assert await b.get_range("a/", containing=b"nowhere") == []
        await b.put(Item("a/bin", b"\x00\xff%_'\x00"))  # any bytes, no pattern syntax
        assert [i.key for i in await b.get_range("a/", containing=b"\xff%_'")] == ["a/bin"]


async def bad_parameters(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await _raises(BadParameter, b.put(Item("", b"x")))
        naive = datetime(2030, 1, 1)  # deliberately without tzinfo
        await _raises(BadParameter, b.put(Item("k", b"x", expires=naive)))
        await _raises(BadParameter, b.get_range("", limit=0))


# -- transactions ----------------------------------------------------------------------------


async def commit_applies_every_op_in_order(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        a = await b.put(Item("tx/a", b"a1"))
        gone = await b.put(Item("tx/b", b"b1"))
        assert await b.commit([]) == []
        watcher = await b.watch(["tx/"])
        out = await b.commit(
            [
                Create(Item("tx/c", b"c1")),
                Update(Item("tx/a", b"a2"), a.revision),
                Delete("tx/b", gone.revision),
                Put(Item("tx/d", b"d1")),
            ]
        )
        assert out[2] is None and all(item is not None for i, item in enumerate(out) if i != 2)
        revisions = [item.revision for item in out if item is not None]
        assert revisions == sorted(set(revisions)) and revisions[0] > gone.revision, revisions
        assert [i.key for i in await b.get_range("tx/")] == ["tx/a", "tx/c", "tx/d"]
        assert (await b.get("tx/a")).value == b"a2"
        assert (await b.get("tx/c")).revision == revisions[0]
        events = await next_events(watcher, 4)
        assert _summary(events) == [
            (EventType.PUT, "tx/c", b"c1"),
            (EventType.PUT, "tx/a", b"a2"),
            (EventType.DELETE, "tx/b", b""),
            (EventType.PUT, "tx/d", b"d1"),
        ]
        assert events[0].item.revision == revisions[0]
        assert events[3].item.revision == revisions[-1] == await b.current_revision()
        await watcher.close()


async def commit_is_all_or_nothing_and_names_the_key(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, clock):
        first = await b.put(Item("tx/a", b"1"))
        await b.put(Item("tx/a", b"2"))
        before = await b.current_revision()
        failing: list[tuple[type[BastionError], str, list[object]]] = [
            (AlreadyExists, "tx/a", [Put(Item("tx/new", b"n")), Create(Item("tx/a", b"x"))]),
            (CompareFailed, "tx/a", [Create(Item("tx/new", b"n")), Update(Item("tx/a", b"x"), 1)]),
            (NotFound, "tx/none", [Put(Item("tx/new", b"n")), Delete("tx/none")]),
            (CompareFailed, "tx/a", [Delete("tx/a", first.revision), Put(Item("tx/new", b"n"))]),
        ]
        for exc, key, ops in failing:
            await _raises(exc, b.commit(ops), key)  # type: ignore[arg-type]
        await _raises(BadParameter, b.commit([Put(Item("tx/x", b"1")), Delete("tx/x")]))
        await _raises(BadParameter, b.commit([Put(Item("", b"1"))]))
        assert await b.current_revision() == before, "a failed commit wrote something"
        assert [i.key for i in await b.get_range("tx/")] == ["tx/a"]
        assert (await b.get("tx/a")).value == b"2"
        await b.put(Item("tx/exp", b"x", expires=clock.now() + timedelta(seconds=1)))
        clock.advance(2)
        await _raises(NotFound, b.commit([Update(Item("tx/exp", b"y"))]), "tx/exp")
        await b.commit([Create(Item("tx/exp", b"again"))])  # an expired key counts as absent
        await _raises(AlreadyExists, b.create(Item("tx/a", b"x")), "tx/a")
        await _raises(NotFound, b.update(Item("tx/none", b"x")), "tx/none")
        await _raises(CompareFailed, b.delete("tx/a", first.revision), "tx/a")


async def create_many_creates_new_keys_or_none(factory: BackendFactory) -> None:
    """:func:`~bastion.backend.base.create_many` (the backend's own method, or ``commit``):
    consecutive revisions and one PUT event each, in order; a live key fails the whole batch
    naming it; an expired key counts as absent."""
    async with _opened(factory) as (b, clock):
        watcher = await b.watch(["many/"])
        await create_many(b, [])
        await create_many(b, [(f"many/{i}", f"v{i}".encode()) for i in range(5)])
        items = await b.get_range("many/")
        assert [(i.key, i.value, i.expires) for i in items] == [
            (f"many/{i}", f"v{i}".encode(), None) for i in range(5)
        ]
        revisions = [i.revision for i in items]
        assert revisions == list(range(revisions[0], revisions[0] + 5)), revisions
        assert await b.current_revision() == revisions[-1]
        events = await next_events(watcher, 5)
        assert _summary(events) == [(EventType.PUT, i.key, i.value) for i in items]
        assert [e.item.revision for e in events] == revisions
        await b.put(Item("many/old", b"x", expires=clock.now() + timedelta(seconds=1)))
        before = await b.current_revision()
        await _raises(
            AlreadyExists, create_many(b, [("many/new", b"n"), ("many/3", b"x")]), "many/3"
        )
        await _raises(BadParameter, create_many(b, [("many/x", b"1"), ("many/x", b"2")]))
        await _raises(BadParameter, create_many(b, [("", b"1")]))
        await _raises(BadParameter, create_many(b, [("many/s", "text")]))  # type: ignore[list-item]
        assert await b.current_revision() == before, "a failed create_many wrote something"
        clock.advance(2)
        await create_many(b, [("many/new", b"n"), ("many/old", b"again")])
        assert (await b.get("many/old")).value == b"again"
        assert (await b.get("many/old")).expires is None
        await _raises(AlreadyExists, b.create(Item("many/new", b"x")), "many/new")
        await watcher.close()


async def replay_of_create_many_keeps_values_after_later_writes(factory: BackendFactory) -> None:
    """A replay of :func:`~bastion.backend.base.create_many`'s PUT events gives the values
    written, also after the keys were overwritten, deleted or expired and swept since (a
    backend may keep such a value in one place until the key changes)."""
    async with _opened(factory) as (b, clock):
        start = await b.current_revision()
        await create_many(
            b, [(f"kept/{i}", f"v{i}".encode()) for i in range(4)] + [("kept/e", b"")]
        )
        await b.put(Item("kept/0", b"new"))
        await b.delete("kept/1")
        await b.delete_range("kept/2")
        await b.put(Item("kept/3", b"short", expires=clock.now() + timedelta(seconds=1)))
        clock.advance(2)  # the DELETE of the sweep comes live after the replay
        watcher = await b.watch(["kept/"], start_revision=start)
        replay = await next_events(watcher, 10)
        await watcher.close()
        assert _summary(replay) == [
            *[(EventType.PUT, f"kept/{i}", f"v{i}".encode()) for i in range(4)],
            (EventType.PUT, "kept/e", b""),
            (EventType.PUT, "kept/0", b"new"),
            (EventType.DELETE, "kept/1", b""),
            (EventType.DELETE, "kept/2", b""),
            (EventType.PUT, "kept/3", b"short"),
            (EventType.DELETE, "kept/3", b""),
        ]


async def concurrent_commits_are_atomic(factory: BackendFactory) -> None:
    """Writers race for one key, each also writing its own: exactly one writer's whole
    transaction is stored, and every loser stored nothing."""
    async with _opened(factory) as (b, _):
        writers = 8

        async def attempt(n: int) -> bool:
            try:
                await b.commit([Put(Item(f"race/mine/{n}", b"x")), Create(Item("race/slot", b"n"))])
            except AlreadyExists as exc:
                assert exc.key == "race/slot", exc.key
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(writers)))
        assert sum(results) == 1, results
        winner = results.index(True)
        assert [i.key for i in await b.get_range("race/mine/")] == [f"race/mine/{winner}"]


# -- TTL -------------------------------------------------------------------------------------


async def ttl_expiry_removes_and_emits_delete(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, clock):
        watcher = await b.watch(["tokens/"])
        expires = clock.now() + timedelta(seconds=10)
        put = await b.put(Item("tokens/t1", b"secret", expires=expires))
        await b.put(Item("tokens/keep", b"forever"))
        got = await b.get("tokens/t1")
        assert got.expires is not None and got.expires == expires == put.expires
        clock.advance(9)
        assert [i.key for i in await b.get_range("tokens/")] == ["tokens/keep", "tokens/t1"]
        clock.advance(2)
        await _raises(NotFound, b.get("tokens/t1"))
        assert [i.key for i in await b.get_range("tokens/")] == ["tokens/keep"]
        events = await next_events(watcher, 3)
        assert _summary(events) == [
            (EventType.PUT, "tokens/t1", b"secret"),
            (EventType.PUT, "tokens/keep", b"forever"),
            (EventType.DELETE, "tokens/t1", b""),
        ]
        assert events[2].item.revision > events[1].item.revision
        await watcher.close()
        await b.create(Item("tokens/t1", b"again"))  # an expired key counts as absent
        await _raises(NotFound, b.update(Item("tokens/gone", b"x")))


async def ttl_expired_item_is_absent_for_conditional_writes(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, clock):
        await b.put(Item("k", b"v", expires=clock.now() + timedelta(seconds=1)))
        clock.advance(5)
        await _raises(NotFound, b.update(Item("k", b"w")))
        await _raises(CompareFailed, b.compare_and_swap(Item("k", b"v"), Item("k", b"w")))
        await _raises(NotFound, b.delete("k"))


# -- revisions -------------------------------------------------------------------------------


async def revisions_strictly_increase(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        assert await b.current_revision() == 0
        seen = [(await b.put(Item("r/a", b"1"))).revision]
        seen.append((await b.create(Item("r/b", b"1"))).revision)
        seen.append((await b.update(Item("r/a", b"2"))).revision)
        seen.append((await b.compare_and_swap(Item("r/a", b"2"), Item("r/a", b"3"))).revision)
        assert seen == sorted(set(seen)), seen
        assert await b.current_revision() == seen[-1]
        await b.delete("r/b")
        after_delete = await b.current_revision()
        assert after_delete > seen[-1]
        assert (await b.put(Item("r/c", b"1"))).revision > after_delete


# -- watch -----------------------------------------------------------------------------------


async def watch_streams_live_events_in_order(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await b.put(Item("w/before", b"0"))
        watcher = await b.watch()
        put = await b.put(Item("w/a", b"1"))
        upd = await b.update(Item("w/a", b"2"))
        await b.delete("w/a")
        await b.delete_range("w/")
        events = await next_events(watcher, 4)
        assert _summary(events) == [
            (EventType.PUT, "w/a", b"1"),
            (EventType.PUT, "w/a", b"2"),
            (EventType.DELETE, "w/a", b""),
            (EventType.DELETE, "w/before", b""),
        ]
        assert [e.item.revision for e in events[:2]] == [put.revision, upd.revision]
        assert events[3].item.revision == await b.current_revision()
        await watcher.close()
        assert [e async for e in watcher] == []


async def watch_resume_replays_exactly_what_came_after(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        written = [await b.put(Item(f"res/{n}", str(n).encode())) for n in range(6)]
        resume_at = written[2].revision
        watcher = await b.watch(["res/"], start_revision=resume_at)
        replay = await next_events(watcher, 3)
        assert [e.item.revision for e in replay] == [w.revision for w in written[3:]]
        live = await b.put(Item("res/live", b"L"))
        (event,) = await next_events(watcher, 1)
        assert event.item.revision == live.revision and event.item.key == "res/live"
        await watcher.close()
        everything = await b.watch(["res/"], start_revision=0)
        replay_all = await next_events(everything, 7)
        assert [e.item.key for e in replay_all] == [f"res/{n}" for n in range(6)] + ["res/live"]
        await everything.close()


async def watch_filters_by_prefix(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        watcher = await b.watch(["a/", "c/"])
        for k in ("ab/x", "a/x", "b/y", "c/1", "a", "a/z"):
            await b.put(Item(k, b"v"))
        events = await next_events(watcher, 3)
        assert [e.item.key for e in events] == ["a/x", "c/1", "a/z"]
        await watcher.close()


async def watch_of_trimmed_revision_fails(factory: BackendFactory) -> None:
    async with _opened(factory, SuiteOptions(event_retention=5)) as (b, _):
        for n in range(30):
            await b.put(Item(f"t/{n % 3}", str(n).encode()))

        async def trimmed() -> bool:
            try:
                watcher = await b.watch(start_revision=1)
            except CompareFailed:
                return True
            await watcher.close()
            return False

        await eventually(trimmed, "events beyond the retention to be trimmed")
        current = await b.current_revision()
        watcher = await b.watch(start_revision=current)
        put = await b.put(Item("t/new", b"n"))
        (event,) = await next_events(watcher, 1)
        assert event.item.revision == put.revision
        await watcher.close()


async def concurrent_cas_increments_are_exact(factory: BackendFactory) -> None:
    async with _opened(factory) as (b, _):
        await b.put(Item("counter", b"0"))
        tasks, per_task = 8, 15

        async def increment() -> None:
            done = 0
            while done < per_task:
                current = await b.get("counter")
                try:
                    new = str(int(current.value) + 1).encode()
                    await b.compare_and_swap(current, Item("counter", new))
                    done += 1
                except CompareFailed:
                    await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            for _ in range(tasks):
                group.create_task(increment())
        assert int((await b.get("counter")).value) == tasks * per_task


async def watch_sees_concurrent_writes_once_in_order(factory: BackendFactory) -> None:
    """Concurrent writers (several connections/transactions) must not make a watcher skip a
    revision: ids assigned out of commit order are the classic PostgreSQL trap (STYLE item 6)."""
    async with _opened(factory) as (b, _):
        watcher = await b.watch(["c/"])
        writers, per_writer = 6, 10

        async def write(n: int) -> list[int]:
            return [(await b.put(Item(f"c/{n}/{i}", b"x"))).revision for i in range(per_writer)]

        async with asyncio.TaskGroup() as group:
            jobs = [group.create_task(write(n)) for n in range(writers)]
        written = sorted(r for job in jobs for r in job.result())
        events = await next_events(watcher, len(written))
        assert [e.item.revision for e in events] == written
        await watcher.close()


async def watcher_sees_expiry_made_by_the_clock_only(factory: BackendFactory) -> None:
    """A DELETE for an expired key arrives even when nobody touches the store."""
    async with _opened(factory) as (b, clock):
        await b.put(Item("hb/node1", b"up", expires=clock.now() + timedelta(seconds=30)))
        watcher = await b.watch(["hb/"])
        clock.advance(31)
        (event,) = await next_events(watcher, 1)
        assert (event.type, event.item.key) == (EventType.DELETE, "hb/node1")
        await watcher.close()


CASES: tuple[ComplianceCase, ...] = (
    create_get_put,
    update_with_and_without_revision,
    compare_and_swap_semantics,
    delete_and_conditional_delete,
    delete_range_respects_prefix,
    commit_applies_every_op_in_order,
    commit_is_all_or_nothing_and_names_the_key,
    create_many_creates_new_keys_or_none,
    replay_of_create_many_keeps_values_after_later_writes,
    concurrent_commits_are_atomic,
    get_range_prefix_boundaries_and_limit,
    bad_parameters,
    ttl_expiry_removes_and_emits_delete,
    ttl_expired_item_is_absent_for_conditional_writes,
    revisions_strictly_increase,
    watch_streams_live_events_in_order,
    watch_resume_replays_exactly_what_came_after,
    watch_filters_by_prefix,
    watch_of_trimmed_revision_fails,
    concurrent_cas_increments_are_exact,
    watch_sees_concurrent_writes_once_in_order,
    watcher_sees_expiry_made_by_the_clock_only,
)
