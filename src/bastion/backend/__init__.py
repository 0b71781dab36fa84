"""The backend package: the key-value contract and its implementations.

Layer: backend (above errors/clock/types, below services). Import the contract and
:func:`open_backend` from here; the SQLite and PostgreSQL modules are imported lazily so that
merely importing the package never needs a database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bastion.backend.base import Backend, Event, EventType, Item, Watcher, key, prefix_end
from bastion.backend.fanout import Fanout, FanoutWatcher
from bastion.backend.memory import MemoryBackend
from bastion.clock import Clock, SystemClock
from bastion.errors import BadParameter

if TYPE_CHECKING:
    from bastion.backend.sqlite import WriterKind

__all__ = [
    "Backend",
    "Event",
    "EventType",
    "Fanout",
    "FanoutWatcher",
    "Item",
    "MemoryBackend",
    "Watcher",
    "key",
    "open_backend",
    "prefix_end",
]

BackendKind = Literal["memory", "sqlite", "postgres"]


async def open_backend(
    kind: BackendKind,
    *,
    path: str | None = None,
    dsn: str | None = None,
    clock: Clock | None = None,
    writer: WriterKind = "thread",
) -> Backend:
    """Open the backend named by ``kind``.

    Args:
        kind: ``memory`` (nothing persisted), ``sqlite`` (needs ``path``) or ``postgres``
            (needs ``dsn``).
        path: SQLite database file; created when missing.
        dsn: PostgreSQL connection string, e.g. ``postgresql://bastion@db:5432/bastion``.
        clock: time source for TTLs; the system clock by default.
        writer: for sqlite, where its writer runs: a worker thread, or a process of its own
            (``storage.writer``, bastion start's default: no GIL shared with the event loop).

    Raises:
        BadParameter: unknown kind, or the path/dsn that kind needs is missing.
        ConnectionProblem: the database cannot be opened or reached.
    """
    clock = clock or SystemClock()
    if kind == "memory":
        return MemoryBackend(clock)
    if kind == "sqlite":
        if not path:
            raise BadParameter(
                "the sqlite backend needs a database file: set storage.path (e.g. "
                "/var/lib/bastion/backend.sqlite)"
            )
        from bastion.backend.sqlite import SQLiteBackend

        return await SQLiteBackend.open(path, clock, writer=writer)
    if kind == "postgres":
        if not dsn:
            raise BadParameter(
                "the postgres backend needs a connection string: set storage.dsn (e.g. "
                "postgresql://bastion@db.example.com:5432/bastion)"
            )
        from bastion.backend.postgres import PostgresBackend

        return await PostgresBackend.open(dsn, clock)
    raise BadParameter(f"unknown backend kind {kind!r}; use memory, sqlite or postgres")
