"""PostgreSQL implementation of the backend contract: the engine for high availability.

Layer: backend (IO shell). Several auth/proxy processes share one database. Design:

* ``kv(key, value, expires, revision)`` + ``events(id bigserial, type, key, value, expires)``,
  keys in the ``"C"`` collation so range order equals Python string order. The schema is created
  and migrated on start (``schema_version`` table + :data:`_MIGRATIONS`, under an advisory lock so
  concurrent starts do not race).
* Every write transaction first takes ``pg_advisory_xact_lock(_EVENTS_LOCK)``. Sequence ids are
  visible in *commit* order, not id order (STYLE "Design constraints" 6); holding one lock from
  before ``nextval`` until commit makes both orders equal, so a reader of ``id > last_seen`` can
  never skip a row. The event id is the revision. ``pg_notify`` inside the transaction is
  delivered at commit.
* :meth:`PostgresBackend.create_many` (the audit log's batches) is two statements whatever the
  batch's size: the ids are reserved from the sequence at once (``setval`` under the lock),
  then the feed and ``kv`` rows are inserted from arrays; ``kv``'s primary key refuses a key
  that is there, and the batch then takes :meth:`~PostgresBackend.commit` (which names a live
  key and replaces an expired one). A ``commit`` of N creates is 3N round trips.
* A dedicated LISTEN connection wakes the poller; a slow fallback poll covers a lost
  notification or a dropped LISTEN connection (which the maintenance loop reconnects).
* A maintenance loop deletes expired keys (DELETE events, compared with the injected clock) and
  trims old events (``meta.trimmed_through`` remembers the horizon for ``watch``).
* The poll, the replay of ``watch`` and the trim rule are :mod:`bastion.backend.eventlog`'s,
  shared with SQLite; this module supplies their SQL (:data:`_EVENTS`).

asyncpg, OSError and timeout exceptions become :mod:`bastion.errors` in :func:`_map_pg_errors`
only. Every database await is bounded by ``op_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import structlog

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
    check_pairs,
    prefix_end,
)
from bastion.backend.eventlog import EventLog, EventLogSQL, row_event, trim_horizon
from bastion.backend.fanout import (
    check_item,
    check_key,
    check_transaction,
    wait_event,
)
from bastion.clock import Clock, SystemClock
from bastion.errors import (
    AlreadyExists,
    BadParameter,
    BastionError,
    CompareFailed,
    ConnectionProblem,
    NotFound,
)
from bastion.tasks import TaskSet

__all__ = ["PostgresBackend"]

_T = TypeVar("_T")
_log = structlog.stdlib.get_logger(__name__)

_CHANNEL = "bastion_backend_events"
_EVENTS_LOCK = 0x62617374_696F6E01  # "bastion" + 1: serialises writers (event order)
_MIGRATE_LOCK = 0x62617374_696F6E02  # serialises schema migrations of concurrent starts
_EVENTS = EventLogSQL(
    insert="INSERT INTO events (type, key, value, expires) VALUES ($1, $2, $3, $4) RETURNING id",
    after="SELECT id, type, key, value, expires FROM events WHERE id > $1 ORDER BY id LIMIT $2",
    trimmed="SELECT value FROM meta WHERE name = 'trimmed_through'",
    bounds="SELECT min(id), max(id) FROM events",
    delete_through="DELETE FROM events WHERE id <= $1",
    raise_trimmed="UPDATE meta SET value = greatest(value, $1) WHERE name = 'trimmed_through'",
    head=(
        "SELECT greatest(coalesce((SELECT max(id) FROM events), 0),"
        " (SELECT value FROM meta WHERE name = 'trimmed_through'))"
    ),
)
"""The event log's statements in PostgreSQL's dialect (``LIMIT NULL`` is "no limit")."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: initial schema
        'CREATE TABLE kv (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL,'
        " expires timestamptz, revision bigint NOT NULL)",
        "CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL",
        'CREATE TABLE events (id bigserial PRIMARY KEY, type text NOT NULL, key text COLLATE "C"'
        " NOT NULL, value bytea NOT NULL, expires timestamptz)",
        "CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('trimmed_through', 0)",
    ),
)


@contextlib.contextmanager
def _map_pg_errors() -> Iterator[None]:
    """The one place where asyncpg / OS / timeout exceptions become Bastion errors."""
    try:
        yield
    except BastionError:
        raise
    except TimeoutError as exc:
        raise ConnectionProblem(
            "the database (postgres) did not answer in time; the change may not have been made"
        ) from exc
    except asyncpg.exceptions.DiskFullError as exc:
        raise ConnectionProblem(
            "the database server's disk is full; the change was not made. Free space on the "
            "PostgreSQL server"
        ) from exc
    except asyncpg.exceptions.ReadOnlySQLTransactionError as exc:
        raise ConnectionProblem(
            "the database is read-only (a standby, or in recovery); the change was not made. "
            "Point storage.dsn at the primary"
        ) from exc
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,  # a connection left mid-operation (a restart)
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InsufficientResourcesError,
        asyncpg.exceptions.TransactionRollbackError,
        OSError,
    ) as exc:
        raise ConnectionProblem(
            f"the database (postgres) is unavailable: {exc}; the change was not made"
        ) from exc
    except asyncpg.exceptions.UniqueViolationError as exc:
        raise AlreadyExists(f"postgres unique violation: {exc}") from exc
    except asyncpg.DataError as exc:
        raise BadParameter(f"postgres refused the data: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise BastionError(f"postgres error: {exc}") from exc


_RESERVE_IDS = (
    "SELECT setval(pg_get_serial_sequence('events', 'id'),"
    " nextval(pg_get_serial_sequence('events', 'id')) + $1 - 1)"
)
"""``(n)`` -> the last of n consecutive event ids taken at once (writers hold the lock)."""
_CREATE_MANY = (
    "WITH rows AS (SELECT $3::bigint + n - 1 AS id, k, v"
    " FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(k, v, n)),"
    " feed AS (INSERT INTO events (id, type, key, value) SELECT id, 'put', k, v FROM rows)"
    " INSERT INTO kv (key, value, revision) SELECT k, v, id FROM rows"
)
"""``(keys, values, first id)``: the PUT events and the new ``kv`` rows, revision = event id."""


class _Taken(Exception):
    """A key of :meth:`PostgresBackend.create_many` is in ``kv`` already."""


def _row_item(row: Any) -> Item:
    return Item(row["key"], bytes(row["value"]), row["expires"], row["revision"])


def _row_event(row: Any) -> Event:
    return row_event(row["id"], row["type"], row["key"], row["value"], row["expires"])


async def _live(conn: Any, key: str, now: datetime, lock: bool = False) -> Item | None:
    query = (
        "SELECT key, value, expires, revision FROM kv"
        " WHERE key = $1 AND (expires IS NULL OR expires > $2)"
    )
    row = await conn.fetchrow(query + " FOR UPDATE" if lock else query, key, now)
    return None if row is None else _row_item(row)


async def _event(conn: Any, type_: EventType, key: str, value: bytes, expires: Any) -> int:
    revision: int = await conn.fetchval(_EVENTS.insert, type_.value, key, value, expires)
    return revision


async def _store(conn: Any, item: Item) -> Item:
    value = bytes(item.value)
    revision = await _event(conn, EventType.PUT, item.key, value, item.expires)
    await conn.execute(
        "INSERT INTO kv (key, value, expires, revision) VALUES ($1, $2, $3, $4) ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value, expires = excluded.expires,"
        " revision = excluded.revision",
        item.key,
        value,
        item.expires,
        revision,
    )
    return Item(item.key, value, item.expires, revision)


async def _remove(conn: Any, key: str) -> int:
    await conn.execute("DELETE FROM kv WHERE key = $1", key)
    return await _event(conn, EventType.DELETE, key, b"", None)


class _PoolEvents:
    """The event log's source (:class:`~bastion.backend.eventlog.EventSource`): the statements
    of :data:`_EVENTS` on pooled connections (``conn`` bounds each by ``op_timeout`` and maps
    errors)."""

    def __init__(self, conn: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._conn = conn

    async def events_after(self, revision: int, limit: int | None) -> tuple[int, list[Event]]:
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read"):
            trimmed = await conn.fetchval(_EVENTS.trimmed)
            rows = await conn.fetch(_EVENTS.after, revision, limit)
        return int(trimmed), [_row_event(r) for r in rows]

    async def head(self) -> int:
        async with self._conn() as conn:
            revision: int = await conn.fetchval(_EVENTS.head)
        return revision

    async def trim(self, retention: int) -> int:
        async with self._conn() as conn, conn.transaction():
            low, high = await conn.fetchrow(_EVENTS.bounds)
            horizon = trim_horizon(low, high, retention)
            if horizon is None:
                return 0
            await conn.execute(_EVENTS.delete_through, horizon)
            await conn.execute(_EVENTS.raise_trimmed, horizon)
        return horizon


_RANGE = (
    "SELECT key, value, expires, revision FROM kv WHERE key >= $1 AND key < $3"
    " AND (expires IS NULL OR expires > $2) ORDER BY key LIMIT $4"
)
_RANGE_CONTAINING = (
    "SELECT key, value, expires, revision FROM kv WHERE key >= $1 AND key < $3"
    " AND (expires IS NULL OR expires > $2) AND position($5::bytea in value) > 0"
    " ORDER BY key LIMIT $4"
)


class PostgresBackend:
    """A :class:`~bastion.backend.base.Backend` in one PostgreSQL database, shared by processes.

    Create with :meth:`open`; ``close()`` stops the loops and closes every connection.
    """

    def __init__(self, pool: Any, dsn: str, clock: Clock, **options: Any) -> None:
        self._pool = pool
        self._dsn = dsn
        self._clock = clock
        self._op_timeout: float = options["op_timeout"]
        self._fallback_poll: float = options["fallback_poll_interval"]
        self._expiry_interval: float = options["expiry_interval"]
        self._events = EventLog(
            _PoolEvents(self._conn),
            engine="postgres",
            queue_size=options["queue_size"],
            retention=options["event_retention"],
            trim_interval=options["trim_interval"],
        )
        self._tasks = TaskSet()
        self._wake = asyncio.Event()
        self._listener: Any = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        clock: Clock = SystemClock(),
        *,
        op_timeout: float = 10.0,
        pool_size: int = 10,
        fallback_poll_interval: float = 1.0,
        expiry_interval: float = 1.0,
        trim_interval: float = 10.0,
        event_retention: int = 10_000,
        queue_size: int = 1024,
    ) -> PostgresBackend:
        """Connect, migrate the schema, start LISTEN and the loops.

        Raises:
            BadParameter: nonsensical intervals or retention.
            ConnectionProblem: the server is unreachable or refused us.
        """
        intervals = (op_timeout, fallback_poll_interval, expiry_interval, trim_interval)
        if min(intervals) <= 0 or event_retention < 1 or pool_size < 1:
            raise BadParameter(
                "timeouts, intervals, pool_size and event_retention must be positive"
            )
        with _map_pg_errors():
            async with asyncio.timeout(op_timeout):
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=pool_size,
                    timeout=op_timeout,
                    command_timeout=op_timeout,
                )
        backend = cls(
            pool,
            dsn,
            clock,
            op_timeout=op_timeout,
            fallback_poll_interval=fallback_poll_interval,
            expiry_interval=expiry_interval,
            trim_interval=trim_interval,
            event_retention=event_retention,
            queue_size=queue_size,
        )
        try:
            await backend._migrate()
            await backend._listen()
            await backend._events.start()
        except BaseException:
            await backend.close()
            raise
        backend._tasks.spawn(backend._poll_loop(), "postgres-poll")
        backend._tasks.spawn(backend._maintenance_loop(), "postgres-maintenance")
        return backend

    # -- connections -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled connection; the whole block is bounded by ``op_timeout``."""
        if self._closed:
            raise ConnectionProblem("backend is closed")
        with _map_pg_errors():
            async with asyncio.timeout(self._op_timeout), self._pool.acquire() as conn:
                try:
                    yield conn
                except asyncpg.exceptions.InternalClientError:
                    # Left mid-operation (seen after a PostgreSQL restart): its protocol state
                    # is unknown, so the pool must not hand it out again.
                    conn.terminate()
                    raise

    async def _write(self, op: Callable[[Any, datetime], Awaitable[_T]]) -> _T:
        """Run ``op`` in a transaction that holds the events lock, then notify watchers."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _EVENTS_LOCK)
            result = await op(conn, self._clock.now())
            await conn.execute("SELECT pg_notify($1, '')", _CHANNEL)
        self._wake.set()
        return result

    async def _migrate(self) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL)")
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            for version, steps in enumerate(_MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in steps:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
                _log.info("postgres_schema_migrated", version=version)

    async def _listen(self) -> None:
        with _map_pg_errors():
            conn = await asyncpg.connect(self._dsn, timeout=self._op_timeout)
            try:
                async with asyncio.timeout(self._op_timeout):
                    await conn.add_listener(_CHANNEL, self._notified)
            except BaseException:
                conn.terminate()
                raise
        self._listener = conn

    def _notified(self, *_: object) -> None:
        self._wake.set()

    # -- loops -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._events.poll()
            except BastionError as exc:  # keep the loop alive; CancelledError still stops it
                _log.warning("postgres_poll_failed", error=str(exc))
            await wait_event(self._wake, self._fallback_poll)

    async def _maintenance_loop(self) -> None:
        while True:
            try:
                if self._listener is None or self._listener.is_closed():
                    self._listener = None
                    await self._listen()
                    self._wake.set()
                await self._expire()
                await self._events.trim_if_due()
            except BastionError as exc:  # keep the loop alive; CancelledError still stops it
                _log.warning("postgres_maintenance_failed", error=str(exc))
            await asyncio.sleep(self._expiry_interval)

    async def _expire(self) -> int:
        now = self._clock.now()
        async with self._conn() as conn:
            probe = "SELECT EXISTS (SELECT 1 FROM kv WHERE expires <= $1)"
            if not await conn.fetchval(probe, now):
                return 0

        async def op(conn: Any, now: datetime) -> int:
            rows = await conn.fetch(
                "SELECT key FROM kv WHERE expires <= $1 ORDER BY key FOR UPDATE", now
            )
            for row in rows:
                await _remove(conn, row["key"])
            return len(rows)

        return await self._write(op)

    # -- the contract ------------------------------------------------------------------------

    async def get(self, key: str) -> Item:
        check_key(key)
        async with self._conn() as conn:
            item = await _live(conn, key, self._clock.now())
        if item is None:
            raise NotFound(f"key {key!r} not found", key=key)
        return item

    async def get_range(
        self, prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        if limit is not None and limit < 1:
            raise BadParameter("limit must be a positive integer")
        async with self._conn() as conn:
            live = (prefix, self._clock.now(), prefix_end(prefix), limit)
            if containing is None:
                rows = await conn.fetch(_RANGE, *live)
            else:
                rows = await conn.fetch(_RANGE_CONTAINING, *live, containing)
        return [_row_item(r) for r in rows]

    async def create(self, item: Item) -> Item:
        check_item(item)

        async def op(conn: Any, now: datetime) -> Item:
            check_condition(Create(item), await _live(conn, item.key, now, lock=True))
            return await _store(conn, item)

        return await self._write(op)

    async def put(self, item: Item) -> Item:
        check_item(item)
        return await self._write(lambda conn, _now: _store(conn, item))

    async def create_batch(self, items: Sequence[Item]) -> list[Item]:
        """Create every item in one transaction, or none (AlreadyExists when any exists or a
        key repeats): :meth:`commit` of Create ops."""
        keys = [item.key for item in items]
        if len(set(keys)) != len(keys):
            raise AlreadyExists("a key of the batch repeats")
        stored = await self.commit([Create(item) for item in items])
        return [item for item in stored if item is not None]

    async def create_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """:func:`bastion.backend.base.create_many`: Create ops for new keys (no expiry) in one
        transaction of two statements (see the module docstring); a key in ``kv`` already
        (live, or expired and not swept yet) sends the batch to :meth:`commit`."""
        checked = check_pairs(pairs)
        if not checked:
            return
        keys = [k for k, _ in checked]
        values = [v for _, v in checked]

        async def op(conn: Any, _now: datetime) -> None:
            last = await conn.fetchval(_RESERVE_IDS, len(keys))
            try:
                await conn.execute(_CREATE_MANY, keys, values, last - len(keys) + 1)
            except asyncpg.exceptions.UniqueViolationError:
                raise _Taken from None  # rolls the transaction back: nothing was written

        try:
            await self._write(op)
        except _Taken:
            await self.commit([Create(Item(k, v)) for k, v in checked])

    async def commit(self, ops: Sequence[Op]) -> list[Item | None]:
        checked = check_transaction(ops)
        if not checked:
            return []

        async def op(conn: Any, now: datetime) -> list[Item | None]:
            for each in checked:
                check_condition(each, await _live(conn, each.key, now, lock=True))
            out: list[Item | None] = []
            for each in checked:
                if isinstance(each, Delete):
                    await _remove(conn, each.key)
                    out.append(None)
                else:
                    out.append(await _store(conn, each.item))
            return out

        return await self._write(op)

    async def update(self, item: Item, expected_revision: int | None = None) -> Item:
        check_item(item)

        async def op(conn: Any, now: datetime) -> Item:
            current = await _live(conn, item.key, now, lock=True)
            check_condition(Update(item, expected_revision), current)
            return await _store(conn, item)

        return await self._write(op)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter("compare_and_swap needs the same key in expected and replace")

        async def op(conn: Any, now: datetime) -> Item:
            current = await _live(conn, expected.key, now, lock=True)
            if current is None or current.value != bytes(expected.value):
                raise CompareFailed(
                    f"key {expected.key!r} does not hold the expected value", key=expected.key
                )
            return await _store(conn, replace)

        return await self._write(op)

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        check_key(key)

        async def op(conn: Any, now: datetime) -> None:
            check_condition(Delete(key, expected_revision), await _live(conn, key, now, lock=True))
            await _remove(conn, key)

        await self._write(op)

    async def delete_range(self, prefix: str) -> int:
        async def op(conn: Any, now: datetime) -> int:
            rows = await conn.fetch(
                "SELECT key FROM kv WHERE key >= $1 AND key < $3"
                " AND (expires IS NULL OR expires > $2) ORDER BY key FOR UPDATE",
                prefix,
                now,
                prefix_end(prefix),
            )
            for row in rows:
                await _remove(conn, row["key"])
            return len(rows)

        return await self._write(op)

    async def current_revision(self) -> int:
        return await self._events.head()

    async def watch(
        self, prefixes: Sequence[str] = ("",), start_revision: int | None = None
    ) -> Watcher:
        return await self._events.watch(prefixes, start_revision)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._tasks.cancel_all()
        self._events.close()
        listener, self._listener = self._listener, None
        with _map_pg_errors():
            try:
                if listener is not None:
                    await listener.close(timeout=self._op_timeout)
            finally:
                try:
                    async with asyncio.timeout(self._op_timeout):
                        await self._pool.close()
                except TimeoutError:
                    self._pool.terminate()
