"""SQLite implementation of the backend contract: the embedded default.

Layer: backend (IO shell). Design (cf. Teleport ``lib/backend/lite``):

* stdlib :mod:`sqlite3`, one connection, driven from one dedicated worker thread, so the event
  loop never blocks and the connection is never shared between threads; ``get`` and
  ``get_range`` run on a second, read-only connection on a thread of its own (WAL readers do
  not wait for the writer: an authorization's reads never queue behind an audit commit). WAL
  journal, ``busy_timeout``, and ``BEGIN IMMEDIATE`` for every write so that writers (also in
  other OS processes sharing the file) serialise instead of failing on lock upgrades.
* ``kv(key, value, expires, revision)`` holds the items; ``events(id AUTOINCREMENT, type, key,
  value, expires)`` is the change feed. Each write inserts its event in the same transaction and
  the event id *is* the revision, so revisions are cluster-wide (file-wide) and strictly
  increasing. ``meta`` holds the schema version and ``trimmed_through`` (the highest trimmed id).
* A create of :meth:`SQLiteBackend.create_many` (the audit log's bulk) stores its value once: its
  feed row's value is empty and the feed reads it from ``kv`` (the row whose revision is the
  event's id). Before that ``kv`` row is overwritten or deleted, a trigger copies the value into
  the feed row, so a replay still sees what was written. Writing every event's bytes twice (feed
  and ``kv``) was half of the audit log's cost on the writer's thread.
* A periodic loop deletes expired keys (emitting DELETE events), trims old events (keeps the last
  ``event_retention``) and polls ``events`` by ``id > last_seen`` into the watchers: that is how
  watchers see writes made by other processes. Local writes wake the loop at once. The poll,
  the replay of ``watch`` and the trim rule are :mod:`bastion.backend.eventlog`'s, shared with
  PostgreSQL; this module supplies their SQL (:data:`_EVENTS`).
* Times are stored as integer microseconds since the epoch, compared with the injected clock.

sqlite3 exceptions are translated to :mod:`bastion.errors` in :func:`_map_sqlite_errors` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

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
from bastion.backend.eventlog import (
    POLL_BATCH,
    EventLog,
    EventLogSQL,
    row_event,
    trim_horizon,
)
from bastion.backend.fanout import (
    check_item,
    check_key,
    check_transaction,
    from_micros,
    to_micros,
    wait_event,
)
from bastion.backend.sqlite_writer import ProcessWriter
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

__all__ = ["SQLiteBackend", "WriterKind"]

WriterKind = Literal["thread", "process"]

_T = TypeVar("_T")
_log = structlog.stdlib.get_logger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value BLOB NOT NULL, expires INTEGER, revision INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, key TEXT NOT NULL,
        value BLOB NOT NULL, expires INTEGER)""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # A feed row whose value kv holds (_NEW_EVENT) gets it before kv's row changes or goes.
    """CREATE TRIGGER IF NOT EXISTS kv_update_keeps_feed_value BEFORE UPDATE ON kv BEGIN
        UPDATE events SET value = old.value
        WHERE id = old.revision AND type = 'put' AND value = x'';
    END""",
    """CREATE TRIGGER IF NOT EXISTS kv_delete_keeps_feed_value BEFORE DELETE ON kv BEGIN
        UPDATE events SET value = old.value
        WHERE id = old.revision AND type = 'put' AND value = x'';
    END""",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('trimmed_through', 0)",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', 1)",
)

_EVENTS = EventLogSQL(
    insert="INSERT INTO events (type, key, value, expires) VALUES (?, ?, ?, ?)",
    # A PUT's empty value may be held by kv (see _NEW_EVENT): kv's row of that revision has it.
    after="SELECT id, type, key, CASE WHEN type = 'put' AND value = x'' THEN coalesce("
    "(SELECT kv.value FROM kv WHERE kv.key = events.key AND kv.revision = events.id), x'')"
    " ELSE value END, expires FROM events WHERE id > ? ORDER BY id LIMIT ?",
    trimmed="SELECT value FROM meta WHERE name = 'trimmed_through'",
    # Two subqueries: SQLite reads min() or max() of the key off the b-tree only when it is
    # a query's sole aggregate; "min(id), max(id)" scans the table (the whole feed).
    bounds="SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)",
    delete_through="DELETE FROM events WHERE id <= ?",
    raise_trimmed="UPDATE meta SET value = max(value, ?) WHERE name = 'trimmed_through'",
    head="SELECT seq FROM sqlite_sequence WHERE name = 'events'",
)
"""The event log's statements in SQLite's dialect (``LIMIT -1`` is "no limit")."""
_UPSERT = (
    "INSERT INTO kv (key, value, expires, revision) VALUES (?, ?, ?, ?) ON CONFLICT (key)"
    " DO UPDATE SET value = excluded.value, expires = excluded.expires,"
    " revision = excluded.revision"
)
_PUT_EVENT = "INSERT INTO events (type, key, value, expires) VALUES ('put', ?, ?, ?)"
_NEW_EVENT = "INSERT INTO events (type, key, value) VALUES ('put', ?, x'')"
"""A create's feed row whose value ``kv`` holds (the module docstring says how it is kept)."""
_NEW_KV = "INSERT INTO kv (key, value, revision) VALUES (?, ?, ?)"
"""A key that is absent from ``kv`` (not even expired): the PRIMARY KEY refuses any other."""
_LIVE_MANY = (
    "SELECT key, revision FROM kv WHERE key IN (SELECT value FROM json_each(?))"
    " AND (expires IS NULL OR expires > ?)"
)
"""The live items among a JSON array of keys (their revisions: what conditions compare)."""


def _free_bytes(path: str) -> str:
    try:
        return f"{shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free} bytes free"
    except OSError:
        return "free space unknown"


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc).lower()


@contextlib.contextmanager
def _map_sqlite_errors(path: str = "") -> Iterator[None]:
    """The one place where sqlite3 (and OS) exceptions become Bastion errors. The messages are
    for operators: they say what is wrong with the storage and that the change was not made
    (a failed write transaction is rolled back)."""
    try:
        yield
    except BastionError:
        raise
    except sqlite3.IntegrityError as exc:
        raise CompareFailed(f"sqlite constraint violated: {exc}") from exc
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if _is_full(exc):
            raise ConnectionProblem(
                f"the data directory is full ({_free_bytes(path)}); the change was not made. "
                "Free some space on the disk that holds the database file"
                + (f" ({path})" if path else "")
            ) from exc
        if "locked" in text or "busy" in text:
            raise ConnectionProblem(
                "the database is busy (another process holds the write lock); the change was "
                "not made, try again"
            ) from exc
        if "readonly" in text or "read-only" in text:
            raise ConnectionProblem(
                "the database file is read-only for this process; the change was not made. "
                "Check the permissions of the data directory"
            ) from exc
        raise ConnectionProblem(f"the database failed ({exc}); the change was not made") from exc
    except (sqlite3.DatabaseError, OSError) as exc:
        raise ConnectionProblem(f"sqlite database unusable: {exc}") from exc
    except sqlite3.Error as exc:
        raise BastionError(f"sqlite misuse (bug): {exc}") from exc


def _has_json_each(db: sqlite3.Connection) -> bool:
    try:
        db.execute("SELECT value FROM json_each('[]')").fetchall()
    except sqlite3.OperationalError:
        return False
    return True


_RANGE = (
    "SELECT key, value, expires, revision FROM kv WHERE key >= ? AND key < ?"
    " AND (expires IS NULL OR expires > ?) ORDER BY key LIMIT ?"
)
_RANGE_CONTAINING = (
    "SELECT key, value, expires, revision FROM kv WHERE key >= ? AND key < ?"
    " AND (expires IS NULL OR expires > ?) AND instr(value, ?) > 0 ORDER BY key LIMIT ?"
)


def _row_item(row: tuple[Any, ...]) -> Item:
    key, value, expires, revision = row
    return Item(key, bytes(value), None if expires is None else from_micros(expires), revision)


def _row_event(row: tuple[Any, ...]) -> Event:
    id_, type_, key, value, expires = row
    return row_event(id_, type_, key, value, None if expires is None else from_micros(expires))


class _Reads:
    """The reads of items over :attr:`db` (the writer's connection or the reader's)."""

    db: sqlite3.Connection

    def _live(self, key: str, now: int) -> Item | None:
        row = self.db.execute(
            "SELECT key, value, expires, revision FROM kv"
            " WHERE key = ? AND (expires IS NULL OR expires > ?)",
            (key, now),
        ).fetchone()
        return None if row is None else _row_item(row)

    def get(self, key: str, now: int) -> Item:
        item = self._live(key, now)
        if item is None:
            raise NotFound(f"key {key!r} not found", key=key)
        return item

    def get_range(
        self, prefix: str, limit: int | None, now: int, containing: bytes | None = None
    ) -> list[Item]:
        live = (prefix, prefix_end(prefix), now)
        last = -1 if limit is None else limit
        if containing is None:
            rows = self.db.execute(_RANGE, (*live, last)).fetchall()
        else:
            rows = self.db.execute(_RANGE_CONTAINING, (*live, containing, last)).fetchall()
        return [_row_item(r) for r in rows]


class _Reader(_Reads):
    """A second connection for ``get`` and ``get_range``, on its own thread: in WAL mode a
    read runs beside the writer's transaction instead of queueing behind it (an audit batch's
    commit held every authorization's reads for milliseconds). A read that starts after a
    write returned sees it: each statement outside a transaction reads the latest commit."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self.db.execute("PRAGMA query_only = ON")
        except BaseException:
            self.db.close()
            raise


class _Store(_Reads):
    """Synchronous SQL over one connection. Runs on the worker thread only."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.db = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,  # the multi-row inserts' texts (_insert_rows) too
        )
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            with self.tx():
                for statement in _SCHEMA:
                    self.db.execute(statement)
            self.json_each = _has_json_each(self.db)
            """Whether :data:`_LIVE_MANY` works (SQLite built without JSON: one lookup a key)."""
            self.covered = 0
            """The revision through which :meth:`write` handed the events out already."""
        except BaseException:
            self.db.close()
            raise

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk); keep the original error.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    def _event(self, type_: EventType, key: str, value: bytes, expires: int | None) -> int:
        cur = self.db.execute(_EVENTS.insert, (type_.value, key, value, expires))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _store(self, item: Item) -> Item:
        expires = None if item.expires is None else to_micros(item.expires)
        value = bytes(item.value)
        revision = self._event(EventType.PUT, item.key, value, expires)
        self.db.execute(_UPSERT, (item.key, value, expires, revision))
        return Item(item.key, value, item.expires, revision)

    def _remove(self, key: str) -> int:
        self.db.execute("DELETE FROM kv WHERE key = ?", (key,))
        return self._event(EventType.DELETE, key, b"", None)

    def write(
        self, method: str, args: tuple[Any, ...], revision: int, limit: int
    ) -> tuple[Any, tuple[int, int, Sequence[Event]] | None]:
        """``method(*args)`` (a write transaction: a method of this store), then ``(start,
        trimmed_through, events after start)`` for the watchers, without another hop. ``start`` is
        ``revision`` (published on the event loop when the write was queued) or, when higher, the
        revision through which an earlier write's answer went out (:attr:`covered`: writes queued
        together all saw the same ``revision``; each takes on from the one before). The events are
        the write's own items when they directly follow ``start`` (nobody wrote in between: nothing
        to read back), else :meth:`events_after`. The read is best effort (None when it failed: the
        poller catches up), so the write's outcome is never lost; the caller publishes it only when
        nothing before ``start`` is left unpublished."""
        result = getattr(self, method)(*args)
        start = max(revision, self.covered)
        own = _own_events(result, start)
        if own is not None:
            self.covered = start + len(own)
            return result, (start, 0, own)
        try:
            trimmed, events = self.events_after(start, limit)
        except sqlite3.Error:
            return result, None
        if events:
            self.covered = events[-1].item.revision
        return result, (start, trimmed, events)

    def create(self, item: Item, now: int) -> Item:
        with self.tx():
            check_condition(Create(item), self._live(item.key, now))
            return self._store(item)

    def put(self, item: Item, now: int) -> Item:
        with self.tx():
            return self._store(item)

    def commit(self, ops: Sequence[Op], now: int) -> list[Item | None]:
        with self.tx():
            if len(ops) == 1 or not self.json_each:
                for op in ops:
                    check_condition(op, self._live(op.key, now))
            else:  # one statement looks every key up (an audit batch: hundreds of creates)
                found = {
                    row[0]: row
                    for row in self.db.execute(
                        _LIVE_MANY, (json.dumps([op.key for op in ops]), now)
                    )
                }
                for op in ops:
                    row = found.get(op.key)
                    check_condition(op, None if row is None else Item(row[0], b"", None, row[1]))
            items = [op.item for op in ops if not isinstance(op, Delete)]
            if len(items) == len(ops) > 1:
                return self._store_many(items)
            out: list[Item | None] = []
            for op in ops:
                if isinstance(op, Delete):
                    self._remove(op.key)
                    out.append(None)
                else:
                    out.append(self._store(op.item))
            return out

    def create_many(self, pairs: list[tuple[str, bytes]], now: int) -> _Puts | list[Item | None]:
        """Create every ``(key, value)``: the events first (consecutive ids, as in
        :meth:`_store_many`; their values empty: ``kv`` holds them, see :data:`_NEW_EVENT`),
        then plain ``INSERT`` into ``kv``, whose PRIMARY KEY refuses a
        key that is there; no lookup of the keys before, no items built after. A refused key
        (live, or expired and not swept yet) rolls it all back and the batch takes
        :meth:`commit` (AlreadyExists for a live key; an expired one is replaced)."""
        try:
            with self.tx():
                _insert_rows(self.db, _NEW_EVENT, [(k,) for k, _ in pairs])
                (last,) = self.db.execute("SELECT last_insert_rowid()").fetchone()
                first = last - len(pairs) + 1
                try:
                    _insert_rows(
                        self.db, _NEW_KV, [(k, v, first + n) for n, (k, v) in enumerate(pairs)]
                    )
                except sqlite3.IntegrityError:
                    raise _Taken from None
        except _Taken:
            return self.commit([Create(Item(k, v)) for k, v in pairs], now)
        return _Puts(first, pairs)

    def _store_many(self, items: Sequence[Item]) -> list[Item | None]:
        """:meth:`_store` of each item, in order, in two ``executemany``: the events get
        consecutive ids (AUTOINCREMENT under our write lock: each insert takes the previous id
        + 1), so the last one's id gives every revision."""
        rows = [
            (item.key, bytes(item.value), None if item.expires is None else to_micros(item.expires))
            for item in items
        ]
        _insert_rows(self.db, _PUT_EVENT, rows)
        (last,) = self.db.execute("SELECT last_insert_rowid()").fetchone()
        first = last - len(rows) + 1
        # One upsert per key is safe in one statement: a transaction names each key once.
        _insert_rows(self.db, _UPSERT, [(k, v, e, first + n) for n, (k, v, e) in enumerate(rows)])
        return [
            Item(item.key, row[1], item.expires, first + n)
            for n, (item, row) in enumerate(zip(items, rows, strict=True))
        ]

    def update(self, item: Item, expected_revision: int | None, now: int) -> Item:
        with self.tx():
            check_condition(Update(item, expected_revision), self._live(item.key, now))
            return self._store(item)

    def compare_and_swap(self, expected: Item, replace: Item, now: int) -> Item:
        with self.tx():
            current = self._live(expected.key, now)
            if current is None or current.value != bytes(expected.value):
                raise CompareFailed(
                    f"key {expected.key!r} does not hold the expected value", key=expected.key
                )
            return self._store(replace)

    def delete(self, key: str, expected_revision: int | None, now: int) -> int:
        with self.tx():
            check_condition(Delete(key, expected_revision), self._live(key, now))
            return self._remove(key)

    def delete_range(self, prefix: str, now: int) -> int:
        with self.tx():
            keys = [
                row[0]
                for row in self.db.execute(
                    "SELECT key FROM kv WHERE key >= ? AND key < ?"
                    " AND (expires IS NULL OR expires > ?) ORDER BY key",
                    (prefix, prefix_end(prefix), now),
                )
            ]
            for k in keys:
                self._remove(k)
            return len(keys)

    def current_revision(self) -> int:
        row = self.db.execute(_EVENTS.head).fetchone()
        return 0 if row is None else int(row[0])

    def expire(self, now: int) -> int:
        """Delete expired keys, one DELETE event each; returns how many."""
        probe = "SELECT key FROM kv WHERE expires IS NOT NULL AND expires <= ? ORDER BY key"
        if self.db.execute(probe + " LIMIT 1", (now,)).fetchone() is None:
            return 0
        with self.tx():
            keys = [row[0] for row in self.db.execute(probe, (now,))]
            for k in keys:
                self._remove(k)
            return len(keys)

    def trim(self, retention: int) -> int:
        """Drop events older than the newest ``retention``; returns the new trim horizon."""
        low, high = self.db.execute(_EVENTS.bounds).fetchone()
        horizon = trim_horizon(low, high, retention)
        if horizon is None:
            return 0
        with self.tx():
            self.db.execute(_EVENTS.delete_through, (horizon,))
            self.db.execute(_EVENTS.raise_trimmed, (horizon,))
            return horizon

    def events_after(
        self, revision: int, limit: int | None, expire: int | None = None
    ) -> tuple[int, list[Event]]:
        """(trimmed_through, events with id > revision) read from one snapshot; first
        :meth:`expire` as of ``expire`` when given (the periodic loop's round: one hop)."""
        if expire is not None:
            try:
                self.expire(expire)
            except sqlite3.Error as exc:  # the read goes on; the next round sweeps again
                _log.warning("sqlite_expire_failed", error=str(exc))
        self.db.execute("BEGIN")
        try:
            (trimmed,) = self.db.execute(_EVENTS.trimmed).fetchone()
            rows = self.db.execute(
                _EVENTS.after, (revision, -1 if limit is None else limit)
            ).fetchall()
        finally:
            self.db.execute("COMMIT")
        return int(trimmed), [_row_event(r) for r in rows]


class _Taken(Exception):
    """A key of :meth:`_Store.create_many` is in ``kv`` already."""


ROWS_PER_INSERT = 64
"""Rows per multi-row ``INSERT`` of :func:`_insert_rows` (at most 64 statement texts to cache;
3 x 64 parameters, far under SQLite's limit)."""


def _insert_rows(db: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``db.executemany(insert, rows)`` as multi-row ``INSERT ... VALUES (...), (...)``
    statements of :data:`ROWS_PER_INSERT` rows: the same rows in the same order (ids of an
    AUTOINCREMENT key consecutive), one statement step per 64 rows instead of one per row.
    Each step gives the GIL away and the writer thread waits to get it back from a busy event
    loop (up to the 5 ms switch interval): per row, that made a bulk audit commit take ~6 ms
    per event under load."""
    head, _, rest = insert.partition(" VALUES ")
    row = rest[: rest.index(")") + 1]  # "(?, ?, ...)": no parentheses inside
    tail = rest[len(row) :]  # e.g. " ON CONFLICT (key) DO UPDATE ..."
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        statement = f"{head} VALUES {','.join([row] * len(part))}{tail}"
        db.execute(statement, [x for values in part for x in values])


class _Puts(Sequence[Event]):
    """The PUT events of :meth:`_Store.create_many`'s pairs, revisions ``first``, ``first +
    1``, ...; each :class:`Event` is made when asked for (usually only the last one is: no
    watcher looks at the audit log's keys)."""

    __slots__ = ("first", "pairs")

    def __init__(self, first: int, pairs: list[tuple[str, bytes]]) -> None:
        self.first = first
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _event(self, n: int) -> Event:
        key, value = self.pairs[n]
        return Event(EventType.PUT, Item(key, value, None, self.first + n))

    def __getitem__(self, n: int | slice) -> Any:
        if isinstance(n, slice):
            return [self._event(i) for i in range(*n.indices(len(self.pairs)))]
        return self._event(range(len(self.pairs))[n])

    def __iter__(self) -> Iterator[Event]:
        return map(self._event, range(len(self.pairs)))

    def keys(self) -> Iterator[str]:
        """The events' keys, in order, without making the events (for the fan-out's filter)."""
        return (key for key, _ in self.pairs)

    def __reduce__(self) -> tuple[type[_PutsRef], tuple[int, int]]:
        # From the writer process: the daemon sent the pairs, so only the revision comes back.
        return _PutsRef, (self.first, len(self.pairs))


@dataclass(frozen=True, slots=True)
class _PutsRef:
    """A :class:`_Puts` as it arrives from the writer process, without its pairs."""

    first: int
    count: int

    def resolve(self, pairs: list[tuple[str, bytes]]) -> _Puts:
        assert len(pairs) == self.count
        return _Puts(self.first, pairs)


def _resolve_puts(answer: Any, pairs: list[tuple[str, bytes]]) -> Any:
    """A ``write("create_many", ...)`` answer from the writer process with its pairs back in
    (the result and, when they are the same, the events for the watchers)."""
    result, read = answer
    if not isinstance(result, _PutsRef):
        return answer
    puts = result.resolve(pairs)
    if read is not None and read[2] is result:
        read = (read[0], read[1], puts)
    return puts, read


def _own_events(result: object, revision: int) -> Sequence[Event] | None:
    """The PUT events of a write's stored items (one Item, or a commit's list) when their
    revisions are ``revision + 1, + 2, ...``: exactly what the events table holds after
    ``revision``, so a read would return the same. None otherwise (a delete among them,
    another writer in between, any other result)."""
    if isinstance(result, _Puts):
        return result if result.first == revision + 1 else None
    items = [result] if isinstance(result, Item) else result
    if not isinstance(items, list) or not items:
        return None
    events = []
    expected = revision
    for item in items:
        expected += 1
        if not isinstance(item, Item) or item.revision != expected:
            return None
        events.append(Event(EventType.PUT, item))
    return events


@dataclass(slots=True)
class _StoreEvents:
    """The event log's source (:class:`~bastion.backend.eventlog.EventSource`): the statements
    of :data:`_EVENTS`, run on the worker thread through the backend's ``call``."""

    call: Callable[..., Awaitable[Any]]
    """Runs a method of the store, by name, where the writer runs."""
    expire_at: int | None = None
    """Set by the periodic loop when an expiry sweep is due: the next :meth:`events_after`
    runs it first, on the same worker-thread hop (then it is cleared)."""

    async def events_after(self, revision: int, limit: int | None) -> tuple[int, list[Event]]:
        expire, self.expire_at = self.expire_at, None
        found: tuple[int, list[Event]] = await self.call("events_after", revision, limit, expire)
        return found

    async def sweep(self) -> None:
        """The expiry sweep that was due, alone (a round that does not poll)."""
        expire, self.expire_at = self.expire_at, None
        if expire is not None:
            await self.call("expire", expire)

    async def head(self) -> int:
        revision: int = await self.call("current_revision")
        return revision

    async def trim(self, retention: int) -> int:
        horizon: int = await self.call("trim", retention)
        return horizon


class SQLiteBackend:
    """A :class:`~bastion.backend.base.Backend` in one SQLite file, shareable between processes.

    Create with :meth:`open`; ``close()`` stops the loop, the reader's thread and the writer
    (its worker thread, or its process: ``writer="process"``, :mod:`~.sqlite_writer`).
    """

    def __init__(
        self,
        writer: _Store | ProcessWriter,
        reader: tuple[ThreadPoolExecutor, _Reader],
        clock: Clock,
        *,
        poll_interval: float,
        event_retention: int,
        trim_interval: float,
        queue_size: int,
        path: str = "",
    ) -> None:
        self._path = path
        self._process = writer if isinstance(writer, ProcessWriter) else None
        """The writer process, or None: the writer's connection is :attr:`_store`, on
        :attr:`_executor`'s thread."""
        self._store = None if isinstance(writer, ProcessWriter) else writer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-sqlite")
        self._reads = reader
        """Where ``get`` and ``get_range`` run: the reader's thread and connection."""
        self._clock = clock
        self._poll_interval = poll_interval
        self._source = _StoreEvents(self._call)
        self._events = EventLog(
            self._source,
            engine="sqlite",
            queue_size=queue_size,
            retention=event_retention,
            trim_interval=trim_interval,
        )
        self._tasks = TaskSet()
        self._wake = asyncio.Event()
        self._closed = False
        self._writing = 0
        """Local writes queued or running: each publishes everything through its commit."""
        self._behind = False
        """A write's answer was not published (a gap, a full batch, a failure, a cancelled
        caller): the next round polls even while other writes are in flight."""

    @classmethod
    async def open(
        cls,
        path: str,
        clock: Clock = SystemClock(),
        poll_interval: float = 0.05,
        *,
        event_retention: int = 10_000,
        trim_interval: float = 10.0,
        busy_timeout: float = 10.0,
        queue_size: int = 1024,
        writer: WriterKind = "thread",
    ) -> SQLiteBackend:
        """Open (creating if needed) the database file at ``path`` and start the periodic loop.

        ``writer``: where the writer's connection runs: a worker thread of this process, or a
        process of its own (:mod:`~bastion.backend.sqlite_writer`: no GIL shared with the
        event loop; what ``bastion start`` uses).

        Raises:
            BadParameter: a nonsensical interval or retention, or an unknown writer.
            ConnectionProblem: the file cannot be opened or is not a database.
        """
        if poll_interval <= 0 or trim_interval <= 0 or event_retention < 1:
            raise BadParameter("poll_interval, trim_interval and event_retention must be positive")
        if writer not in ("thread", "process"):
            raise BadParameter(f"unknown sqlite writer {writer!r}; use thread or process")
        reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-sqlite-read")
        loop = asyncio.get_running_loop()
        opened: _Store | ProcessWriter | None = None
        try:
            if writer == "process":
                opened = await ProcessWriter.start(path, busy_timeout)
            with _map_sqlite_errors(path):
                if opened is None:
                    opened = await loop.run_in_executor(reads, _Store, path, busy_timeout)
                reader = await loop.run_in_executor(reads, _Reader, path, busy_timeout)
        except BaseException:
            if isinstance(opened, ProcessWriter):
                await opened.close()
            elif opened is not None:
                opened.db.close()
            reads.shutdown(wait=False)
            raise
        backend = cls(
            opened,
            (reads, reader),
            clock,
            poll_interval=poll_interval,
            event_retention=event_retention,
            trim_interval=trim_interval,
            queue_size=queue_size,
            path=path,
        )
        await backend._events.start()
        backend._tasks.spawn(backend._periodic(), f"sqlite-periodic:{path}")
        return backend

    async def _call(self, method: str, *args: Any) -> Any:
        """The writer's ``method(*args)``, on its thread or in its process."""
        if self._process is not None:
            return await self._process.call(method, *args)
        return await self._on(self._executor, getattr(self._store, method), *args)

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(reads, *args)`` on the reader's thread, with its connection."""
        executor, reads = self._reads
        return await self._on(executor, fn, reads, *args)

    async def _on(self, executor: ThreadPoolExecutor, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise ConnectionProblem("backend is closed")
        loop = asyncio.get_running_loop()
        with _map_sqlite_errors(self._path):
            return await loop.run_in_executor(executor, functools.partial(fn, *args))

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (``writer="process"``), else None."""
        return None if self._process is None else self._process.pid

    def _now(self) -> int:
        return to_micros(self._clock.now())

    async def _write(self, method: str, *args: Any) -> Any:
        """Run the writer's ``method(*args, now)`` and publish it (and anything other processes
        wrote before it) to the watchers from the same hop to the writer; the poller runs only
        when that read could not cover everything."""
        events = self._events
        read: tuple[int, int, Sequence[Event]] | None
        self._writing += 1
        try:
            answer = await self._call(
                "write", method, (*args, self._now()), events.last_seen, POLL_BATCH
            )
            if method == "create_many":
                answer = _resolve_puts(answer, args[0])
            result, read = answer
        except BaseException:
            self._fall_behind()
            raise
        finally:
            self._writing -= 1
        # An earlier write's answer that was not published (its caller was cancelled) leaves
        # a gap before ``start``: the poller reads from what was published.
        if (
            read is None
            or read[0] > events.last_seen
            or not events.deliver(read[1], read[2], POLL_BATCH)
        ):
            self._fall_behind()
        return result

    def _fall_behind(self) -> None:
        self._behind = True
        self._wake.set()

    def _writes_cover(self) -> bool:
        """Whether the writes in flight will publish what a poll would read now: each one's
        answer holds every event through its commit (other processes' too), or it falls
        behind. Polling meanwhile read a busy writer's batches back (the audit log's: a third
        of its rows, read and turned into events for nothing)."""
        return self._writing > 0 and not self._behind

    # -- periodic loop -----------------------------------------------------------------------

    async def _periodic(self) -> None:
        """Each round: the expiry sweep (at most once per ``poll_interval``: local writes wake
        the loop far more often, and reads never return an expired item anyway), the trim
        when due, and the poll, whose first read runs the sweep on the same worker-thread hop
        (a hop costs more CPU than either statement). No poll while local writes are in
        flight and none fell behind (:meth:`_writes_cover`): the sweep runs alone then."""
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while True:
            self._wake.clear()
            try:
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._poll_interval
                    self._source.expire_at = self._now()
                await self._events.trim_if_due()
                if self._writes_cover():
                    if self._source.expire_at is not None:
                        await self._source.sweep()
                else:
                    self._behind = False
                    try:
                        await self._events.poll()
                    except BaseException:
                        self._behind = True
                        raise
            except BastionError as exc:  # keep the loop alive; CancelledError still stops it
                _log.warning("sqlite_periodic_failed", error=str(exc))
            await wait_event(self._wake, self._poll_interval)

    # -- the contract ------------------------------------------------------------------------

    async def get(self, key: str) -> Item:
        check_key(key)
        return await self._read(_Reads.get, key, self._now())

    async def get_range(
        self, prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        if limit is not None and limit < 1:
            raise BadParameter("limit must be a positive integer")
        return await self._read(_Reads.get_range, prefix, limit, self._now(), containing)

    async def create(self, item: Item) -> Item:
        check_item(item)
        return cast(Item, await self._write("create", item))

    async def put(self, item: Item) -> Item:
        check_item(item)
        return cast(Item, await self._write("put", item))

    async def create_batch(self, items: Sequence[Item]) -> list[Item]:
        """Create every item in one transaction, or none (AlreadyExists when any exists or a
        key repeats): :meth:`commit` of Create ops."""
        keys = [item.key for item in items]
        if len(set(keys)) != len(keys):
            raise AlreadyExists("a key of the batch repeats")
        stored = await self.commit([Create(item) for item in items])
        return [item for item in stored if item is not None]

    async def create_many(self, pairs: Sequence[tuple[str, bytes]]) -> None:
        """:func:`bastion.backend.base.create_many`: :meth:`commit` of Create ops for new keys
        (no expiry), in one transaction, without building the stored items."""
        checked = check_pairs(pairs)
        if checked:
            await self._write("create_many", checked)

    async def commit(self, ops: Sequence[Op]) -> list[Item | None]:
        checked = check_transaction(ops)
        if not checked:
            return []
        return cast(list[Item | None], await self._write("commit", checked))

    async def update(self, item: Item, expected_revision: int | None = None) -> Item:
        check_item(item)
        return cast(Item, await self._write("update", item, expected_revision))

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter("compare_and_swap needs the same key in expected and replace")
        return cast(Item, await self._write("compare_and_swap", expected, replace))

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        check_key(key)
        await self._write("delete", key, expected_revision)

    async def delete_range(self, prefix: str) -> int:
        return cast(int, await self._write("delete_range", prefix))

    async def current_revision(self) -> int:
        return cast(int, await self._call("current_revision"))

    async def watch(
        self, prefixes: Sequence[str] = ("",), start_revision: int | None = None
    ) -> Watcher:
        return await self._events.watch(prefixes, start_revision)

    async def close(self) -> None:
        if self._closed:
            return
        await self._tasks.cancel_all()
        self._events.close()
        executor, reads = self._reads
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, reads.db.close)
            if self._process is not None:
                await self._process.close()
            elif self._store is not None:
                await loop.run_in_executor(self._executor, self._store.db.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
            executor.shutdown(wait=False)
