"""The backend compliance suite over every implementation, plus multi-process behaviour of the
shared-storage backends (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.backend import Backend, EventType, Item, MemoryBackend
from bastion.backend.base import Create, Delete, Put, create_many
from bastion.backend.compliance import (
    CASES,
    BackendFactory,
    ComplianceCase,
    SuiteOptions,
    next_events,
)
from bastion.backend.postgres import PostgresBackend
from bastion.backend.sqlite import SQLiteBackend, WriterKind
from bastion.clock import FakeClock
from bastion.errors import ConnectionProblem
from bastion.testing.peers.ports import free_port
from bastion.testing.peers.postgres import PgServer, create_database

_counter = itertools.count()


def _memory_factory() -> BackendFactory:
    async def make(options: SuiteOptions) -> Backend:
        return MemoryBackend(options.clock, max_events=options.event_retention, sweep_interval=0.02)

    return make


def _sqlite_factory(tmp_path: Path, writer: WriterKind) -> BackendFactory:
    async def make(options: SuiteOptions) -> Backend:
        path = tmp_path / f"backend-{next(_counter)}.sqlite"
        return await SQLiteBackend.open(
            str(path),
            options.clock,
            poll_interval=0.02,
            event_retention=options.event_retention,
            trim_interval=0.05,
            writer=writer,
        )

    return make


def _postgres_factory(server: PgServer) -> BackendFactory:
    async def make(options: SuiteOptions) -> Backend:
        dsn = await create_database(server)
        return await PostgresBackend.open(
            dsn,
            options.clock,
            expiry_interval=0.02,
            trim_interval=0.05,
            fallback_poll_interval=0.5,
            event_retention=options.event_retention,
            pool_size=4,
        )

    return make


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite-process",
        pytest.param("postgres", marks=pytest.mark.needs_postgres),
    ]
)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    if request.param == "memory":
        return _memory_factory()
    if request.param == "sqlite":
        return _sqlite_factory(tmp_path, "thread")
    if request.param == "sqlite-process":  # the writer in its own process (bastion start's)
        return _sqlite_factory(tmp_path, "process")
    return _postgres_factory(request.getfixturevalue("postgres_server"))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_compliance(case: ComplianceCase, factory: BackendFactory) -> None:
    await case(factory)


# -- several OS processes on one store -------------------------------------------------------

_CAS_SCRIPT = """
import asyncio, sys
from bastion.backend import Item, open_backend
from bastion.errors import CompareFailed

async def main(kind, target, count):
    b = await open_backend(kind, **({"path": target} if kind == "sqlite" else {"dsn": target}))
    try:
        done = conflicts = 0
        while done < count:
            current = await b.get("counter")
            try:
                new = str(int(current.value) + 1).encode()
                await b.compare_and_swap(current, Item("counter", new))
                done += 1
            except CompareFailed:
                conflicts += 1
        print(conflicts)
    finally:
        await b.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

_PUT_SCRIPT = """
import asyncio, sys
from bastion.backend import Item, open_backend

async def main(kind, target):
    b = await open_backend(kind, **({"path": target} if kind == "sqlite" else {"dsn": target}))
    try:
        await b.put(Item("cross/from-child", b"hello"))
    finally:
        await b.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _run_python(script: str, *args: str, timeout: float = 120) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.needs_postgres)])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, target) of an empty store reachable from other processes."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "shared.sqlite")
    server: PgServer = request.getfixturevalue("postgres_server")
    return "postgres", await create_database(server)


async def _open(kind: str, target: str) -> Backend:
    if kind == "sqlite":
        return await SQLiteBackend.open(target, FakeClock(), poll_interval=0.02)
    return await PostgresBackend.open(target, FakeClock(), fallback_poll_interval=0.5)


async def test_two_processes_cas_increments_are_exact(shared_store: tuple[str, str]) -> None:
    kind, target = shared_store
    backend = await _open(kind, target)
    try:
        await backend.put(Item("counter", b"0"))
        per_process = 1000
        outputs = await asyncio.gather(
            _run_python(_CAS_SCRIPT, kind, target, str(per_process)),
            _run_python(_CAS_SCRIPT, kind, target, str(per_process)),
        )
        final = await backend.get("counter")
        assert int(final.value) == 2 * per_process, outputs
        assert final.revision == await backend.current_revision()
    finally:
        await backend.close()


async def test_watcher_sees_write_from_another_process(shared_store: tuple[str, str]) -> None:
    kind, target = shared_store
    backend = await _open(kind, target)
    try:
        watcher = await backend.watch(["cross/"])
        await _run_python(_PUT_SCRIPT, kind, target)
        (event,) = await next_events(watcher, 1)
        assert (event.type, event.item.key, event.item.value) == (
            EventType.PUT,
            "cross/from-child",
            b"hello",
        )
        assert event.item.revision == (await backend.get("cross/from-child")).revision
        await watcher.close()
    finally:
        await backend.close()


# -- foreign errors are mapped at the boundary -----------------------------------------------


async def test_sqlite_garbage_file_is_a_connection_problem(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-db.sqlite"
    garbage.write_bytes(b"this is not a database file, just text" * 200)
    with pytest.raises(ConnectionProblem) as info:
        await SQLiteBackend.open(str(garbage))
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_postgres_unreachable_is_a_connection_problem() -> None:
    port = free_port()  # a port nobody listens on
    with pytest.raises(ConnectionProblem):
        await PostgresBackend.open(f"postgresql://nobody@127.0.0.1:{port}/x", op_timeout=5)


async def test_sqlite_loop_picks_up_expiry_from_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = await SQLiteBackend.open(str(tmp_path / "ttl.sqlite"), clock, poll_interval=0.01)
    try:
        await backend.put(Item("hb/1", b"x", expires=clock.now() + timedelta(seconds=1)))
        watcher = await backend.watch(["hb/"])
        clock.advance(1)
        (event,) = await next_events(watcher, 1)
        assert event.type is EventType.DELETE
        assert await backend.current_revision() == event.item.revision
    finally:
        await backend.close()


async def test_sqlite_full_disk_is_a_clear_message_and_changes_nothing(tmp_path: Path) -> None:
    backend = await SQLiteBackend.open(str(tmp_path / "full.sqlite"), FakeClock())
    try:
        await backend.put(Item("roles/a", b"1"))
        before = await backend.current_revision()
        store = backend._store  # cap the file at its current size: SQLITE_FULL on growth
        (pages,) = store.db.execute("PRAGMA page_count").fetchone()
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        big = Item("roles/b", b"x" * 200_000)
        with pytest.raises(ConnectionProblem) as info:
            await backend.commit([Put(big), Put(Item("roles/c", b"y"))])
        message = str(info.value)
        assert message.startswith("the data directory is full (") and "bytes free" in message
        assert "the change was not made" in message and "sqlite" not in message.split(".")[0]
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert await backend.current_revision() == before
        assert [i.key for i in await backend.get_range("roles/")] == ["roles/a"]
    finally:
        await backend.close()


async def test_sqlite_writers_publish_every_write_once_in_order_with_two_backends(
    tmp_path: Path,
) -> None:
    """A write hands its own events to the watchers from its worker-thread hop (no poll), but
    only when nobody wrote in between: writes by another backend on the same file between two
    of ours still reach the watcher, each once, in revision order; a batch of creates gets
    consecutive revisions, the ones its events carry."""
    path = str(tmp_path / "two.sqlite")
    one = await SQLiteBackend.open(path, FakeClock(), poll_interval=0.02)
    two = await SQLiteBackend.open(path, FakeClock(), poll_interval=0.02)
    try:
        watcher = await one.watch(["w/"])
        await one.commit([Create(Item(f"w/a{i}", b"a")) for i in range(3)])
        await two.commit([Create(Item(f"w/b{i}", b"b")) for i in range(2)])
        batch = await one.commit([Create(Item(f"w/c{i}", b"c")) for i in range(4)])
        await one.put(Item("w/d", b"d"))
        await one.commit([Delete("w/a0"), Put(Item("w/e", b"e"))])
        events = await next_events(watcher, 12)
        keys = ["w/a0", "w/a1", "w/a2", "w/b0", "w/b1", "w/c0", "w/c1", "w/c2", "w/c3", "w/d"]
        assert [e.item.key for e in events] == [*keys, "w/a0", "w/e"]
        assert events[-2].type is EventType.DELETE
        revisions = [e.item.revision for e in events]
        assert revisions == list(range(revisions[0], revisions[0] + 12))
        assert [i.revision for i in batch if i is not None] == revisions[5:9]
        assert [e.item for e in events[5:9]] == batch
        assert (await two.get("w/c3")).revision == revisions[8]
        with pytest.raises(asyncio.TimeoutError):  # nothing twice
            await asyncio.wait_for(anext(aiter(watcher)), 0.2)
    finally:
        await one.close()
        await two.close()


async def test_sqlite_queued_writes_publish_their_own_events_without_a_read(
    tmp_path: Path,
) -> None:
    """Writes queued together on the worker thread (all saw the same published revision) hand
    their own events to the watchers, each once, in order, without reading the feed back
    (``events_after``) and without the poller; ``create_many`` too, also when a key of it
    is expired but not swept yet (the batch then takes ``commit``). A write whose caller was
    cancelled (its answer never published) leaves no event behind: the poller picks it up."""
    clock = FakeClock()
    backend = await SQLiteBackend.open(str(tmp_path / "q.sqlite"), clock, poll_interval=60)
    store = backend._store
    reads: list[int] = []
    read = store.events_after

    def counted(revision: int, limit: int | None, expire: int | None = None) -> Any:
        reads.append(revision)
        return read(revision, limit, expire)

    store.events_after = counted  # type: ignore[method-assign]
    try:
        watcher = await backend.watch(["q/"])
        await backend.put(Item("q/old", b"x", expires=clock.now() + timedelta(seconds=1)))
        clock.advance(2)
        await next_events(watcher, 1)
        reads.clear()
        await asyncio.gather(
            create_many(backend, [(f"q/a{i}", b"a") for i in range(3)]),
            backend.put(Item("q/b", b"b")),
            create_many(backend, [("q/c", b"c"), ("q/old", b"again")]),
            backend.commit([Put(Item("q/d", b"d")), Put(Item("q/b", b"b2"))]),
        )
        events = await next_events(watcher, 8)
        assert [e.item.key for e in events] == [
            *(f"q/a{i}" for i in range(3)),
            "q/b",
            "q/c",
            "q/old",
            "q/d",
            "q/b",
        ]
        revisions = [e.item.revision for e in events]
        assert revisions == list(range(revisions[0], revisions[0] + 8))
        assert (await backend.get("q/old")).value == b"again"
        assert reads == [], reads
        entered, gate = threading.Event(), threading.Event()
        put = store.put

        def held(item: Item, now: int) -> Item:
            stored = put(item, now)
            entered.set()
            gate.wait(10)
            return stored

        store.put = held  # type: ignore[method-assign]
        cancelled = asyncio.ensure_future(backend.put(Item("q/e", b"e")))
        await asyncio.to_thread(entered.wait, 10)  # written, its answer not back yet
        store.put = put  # type: ignore[method-assign]
        cancelled.cancel()
        gate.set()
        await backend.put(Item("q/f", b"f"))  # queued right behind it
        assert [e.item.key for e in await next_events(watcher, 2)] == ["q/e", "q/f"]
        with pytest.raises(asyncio.TimeoutError):  # nothing twice
            await asyncio.wait_for(anext(aiter(watcher)), 0.2)
    finally:
        await backend.close()


async def test_sqlite_poller_does_not_read_back_what_writes_in_flight_publish(
    tmp_path: Path,
) -> None:
    """While local writes are in flight the poller does not read the feed (their answers
    publish everything through their commits: reading then read a busy writer's batches
    back); the expiry sweep still runs. Another process's writes meanwhile reach the watcher
    all the same, once, in order: through the next local write's answer, or the poll once the
    writes stopped or one fell behind."""
    clock = FakeClock()
    path = str(tmp_path / "busy.sqlite")
    backend = await SQLiteBackend.open(path, clock, poll_interval=0.01)
    other = await SQLiteBackend.open(path, clock, poll_interval=60)
    store = backend._store
    reads: list[int] = []
    read, expire = store.events_after, store.expire
    sweeps: list[int] = []

    def counted(revision: int, limit: int | None, expire: int | None = None) -> Any:
        reads.append(revision)
        return read(revision, limit, expire)

    def swept(now: int) -> int:
        sweeps.append(now)
        return expire(now)

    store.events_after = counted  # type: ignore[method-assign]
    store.expire = swept  # type: ignore[method-assign]
    try:
        watcher = await backend.watch(["busy/"])
        await backend.put(Item("busy/ttl", b"x", expires=clock.now() + timedelta(seconds=1)))
        await next_events(watcher, 1)
        backend._writing += 1  # as while a write is queued or running
        await other.put(Item("busy/other", b"o"))
        clock.advance(2)
        reads.clear()
        sweeps.clear()
        await asyncio.sleep(0.15)  # ~15 rounds of the periodic loop
        assert reads == [] and sweeps
        backend._writing -= 1
        await backend.put(Item("busy/a", b"a"))  # its answer reads the others' events
        events = await next_events(watcher, 3)
        assert [(e.type, e.item.key) for e in events] == [
            (EventType.PUT, "busy/other"),
            (EventType.DELETE, "busy/ttl"),
            (EventType.PUT, "busy/a"),
        ]
        await other.put(Item("busy/late", b"l"))  # no local write follows: the poll finds it
        assert [e.item.key for e in await next_events(watcher, 1)] == ["busy/late"]
        backend._writing += 1
        await other.put(Item("busy/behind", b"b"))
        backend._fall_behind()  # a write's answer was not published: poll all the same
        assert [e.item.key for e in await next_events(watcher, 1)] == ["busy/behind"]
        backend._writing -= 1
        with pytest.raises(asyncio.TimeoutError):  # nothing twice
            await asyncio.wait_for(anext(aiter(watcher)), 0.2)
    finally:
        await backend.close()
        await other.close()


async def test_sqlite_reads_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    """get and get_range run on their own connection and thread: while a write transaction
    holds the writer (an audit batch's commit), they answer from the last commit; once the
    write returned, a read sees it."""
    backend = await SQLiteBackend.open(str(tmp_path / "r.sqlite"), FakeClock())
    store = backend._store
    entered, gate = threading.Event(), threading.Event()
    put = store.put

    def held(item: Item, now: int) -> Item:
        with store.tx():
            store.db.execute("INSERT INTO meta (name, value) VALUES ('held', 1)")
            entered.set()  # the write lock is taken, the transaction open
            gate.wait(10)
        return put(item, now)

    try:
        await backend.put(Item("r/a", b"1"))
        store.put = held  # type: ignore[method-assign]
        writing = asyncio.ensure_future(backend.put(Item("r/a", b"2")))
        await asyncio.to_thread(entered.wait, 10)
        assert (await asyncio.wait_for(backend.get("r/a"), 2)).value == b"1"
        assert [i.key for i in await asyncio.wait_for(backend.get_range("r/"), 2)] == ["r/a"]
        gate.set()
        await writing
        assert (await backend.get("r/a")).value == b"2"
    finally:
        gate.set()
        await backend.close()


def test_multi_row_inserts_store_what_executemany_stores(tmp_path: Path) -> None:
    from bastion.backend.sqlite import _PUT_EVENT, _UPSERT, ROWS_PER_INSERT, _insert_rows

    schema = (
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,"
        " key TEXT NOT NULL, value BLOB NOT NULL, expires INTEGER)",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires INTEGER,"
        " revision INTEGER NOT NULL)",
    )
    sizes = (1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, 2 * ROWS_PER_INSERT + 3)
    dumps = []
    for way in ("executemany", "multi-row"):
        db = sqlite3.connect(tmp_path / f"{way}.sqlite", isolation_level=None)
        for statement in schema:
            db.execute(statement)
        db.execute("INSERT INTO kv VALUES ('k/3', x'00', NULL, 1)")  # the upsert replaces it
        for n in sizes:
            rows = [(f"k/{i}", f"v{n}-{i}".encode(), None if i % 2 else i) for i in range(n)]
            upserts = [(k, v, e, 100 + i) for i, (k, v, e) in enumerate(rows)]
            if way == "executemany":
                db.executemany(_PUT_EVENT, rows)
                db.executemany(_UPSERT, upserts)
            else:
                _insert_rows(db, _PUT_EVENT, rows)
                _insert_rows(db, _UPSERT, upserts)
        dumps.append(
            [
                db.execute("SELECT * FROM events ORDER BY id").fetchall(),
                db.execute("SELECT * FROM kv ORDER BY key").fetchall(),
            ]
        )
        db.close()
    assert dumps[0] == dumps[1] and len(dumps[0][0]) == sum(sizes)


def test_a_postgres_connection_confused_mid_operation_is_a_connection_problem() -> None:
    import asyncpg

    from bastion.backend.postgres import _map_pg_errors

    # What asyncpg raised after a PostgreSQL restart for a connection left mid-operation: it
    # escaped as a raw exception and ended auth's background loops (and the daemon).
    with pytest.raises(ConnectionProblem, match="unavailable"), _map_pg_errors():
        raise asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )


@pytest.mark.needs_postgres
async def test_a_postgres_operation_cut_by_its_timeout_does_not_poison_the_pool(
    postgres_server: PgServer,
) -> None:
    backend = await PostgresBackend.open(
        await create_database(postgres_server), FakeClock(), pool_size=1, op_timeout=0.3
    )
    try:
        with pytest.raises(ConnectionProblem, match="did not answer in time"):
            async with backend._conn() as conn:
                await conn.execute("SELECT pg_sleep(5)")
        await backend.create(Item("after/timeout", b"v"))  # the one pooled connection, afresh
        assert (await backend.get("after/timeout")).value == b"v"
    finally:
        await backend.close()
