"""The backend contract: a small key-value store with revisions, TTL and a watch stream.

Keys are ``/``-separated text (``roles/dev``); values are bytes. Every write gets a revision from
one cluster-wide, strictly increasing counter, and produces exactly one :class:`Event` with that
revision; ``watch(start_revision=r)`` replays events with revision > r and then streams live ones,
so a watcher that reconnects misses nothing (unless the events were trimmed: then CompareFailed).

:meth:`Backend.commit` applies several conditional writes (:data:`Op`) in one transaction, all
or none; a failed condition names its key (``exc.key``), so a caller that mixes its own keys
with someone else's can tell which condition failed.

Implementations: :mod:`.memory` (reference, tests), :mod:`.sqlite` (embedded default),
:mod:`.postgres` (HA). All must pass :mod:`.compliance`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias, runtime_checkable

from bastion.errors import AlreadyExists, BadParameter, CompareFailed, NotFound

__all__ = [
    "Backend",
    "Create",
    "Delete",
    "Event",
    "EventType",
    "Item",
    "Op",
    "Put",
    "Update",
    "Watcher",
    "check_condition",
    "check_ops",
    "check_pairs",
    "create_many",
    "key",
    "prefix_end",
]


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: bytes
    expires: datetime | None = None
    """Timezone-aware UTC; the item disappears (and a DELETE event is emitted) at this time."""
    revision: int = 0
    """Set by the backend on every write; ignored on input."""


@dataclass(frozen=True, slots=True)
class Create:
    """Write ``item`` only if its key is absent (or expired): AlreadyExists otherwise."""

    item: Item

    @property
    def key(self) -> str:
        return self.item.key


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``item`` unconditionally."""

    item: Item

    @property
    def key(self) -> str:
        return self.item.key


@dataclass(frozen=True, slots=True)
class Update:
    """Write ``item`` only if its key is present (NotFound), and at ``expected_revision`` when
    given (CompareFailed)."""

    item: Item
    expected_revision: int | None = None

    @property
    def key(self) -> str:
        return self.item.key


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key`` only if present (NotFound), and at ``expected_revision`` when given
    (CompareFailed)."""

    key: str
    expected_revision: int | None = None


Op: TypeAlias = Create | Put | Update | Delete
"""One write of a :meth:`Backend.commit` transaction."""


def check_ops(ops: Sequence[Op]) -> None:
    """Refuse a transaction that names one key twice (its outcome would depend on the order)."""
    seen: set[str] = set()
    for op in ops:
        if op.key in seen:
            raise BadParameter(f"a transaction names key {op.key!r} twice; merge the writes")
        seen.add(op.key)


def check_pairs(pairs: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Validate the ``(key, value)`` pairs of :func:`create_many`: non-empty keys without NUL,
    bytes values, no key twice (BadParameter otherwise); returns them as a list."""
    out = list(pairs)
    for k, value in out:
        if type(k) is not str or not k or "\x00" in k:
            raise BadParameter(f"backend key {k!r} must be a non-empty string without NUL")
        if type(value) is not bytes:
            raise BadParameter(f"value of {k!r} must be bytes")
    if len({k for k, _ in out}) != len(out):
        seen: set[str] = set()
        for k, _ in out:
            if k in seen:
                raise BadParameter(f"a transaction names key {k!r} twice; merge the writes")
            seen.add(k)
    return out


async def create_many(backend: Backend, pairs: Sequence[tuple[str, bytes]]) -> None:
    """Create each ``(key, value)`` (no expiry) in one transaction, or none: what
    ``backend.commit([Create(Item(key, value)), ...])`` does, without returning the stored
    items (the bulk writer of the audit log needs none). A backend may offer a faster
    ``create_many(pairs)`` method with this contract; any other backend gets ``commit``.

    Raises:
        AlreadyExists: a live key exists (``exc.key``); nothing was written.
        BadParameter: an invalid key or value, a key named twice.
    """
    fast = getattr(backend, "create_many", None)
    if fast is not None:
        await fast(pairs)
        return
    ops: list[Op] = [Create(Item(k, value)) for k, value in check_pairs(pairs)]
    if ops:
        await backend.commit(ops)


def check_condition(op: Op, current: Item | None) -> None:
    """Raise the error ``op``'s condition calls for, given the live item at its key (None when
    absent or expired). The error carries ``key``. Pure: every engine uses it."""
    if isinstance(op, Create):
        if current is not None:
            raise AlreadyExists(f"key {op.key!r} already exists", key=op.key)
        return
    if isinstance(op, Put):
        return
    if current is None:
        raise NotFound(f"key {op.key!r} not found", key=op.key)
    if op.expected_revision is not None and current.revision != op.expected_revision:
        raise CompareFailed(
            f"key {op.key!r} is at revision {current.revision}, not {op.expected_revision}",
            key=op.key,
        )


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    item: Item
    """For DELETE, ``item.value`` is empty and ``item.revision`` is the delete's revision."""


def key(*parts: str) -> str:
    """Join key parts with ``/``; parts must be non-empty and contain no ``/``."""
    for part in parts:
        if not part or "/" in part:
            raise ValueError(f"invalid key part {part!r}")
    return "/".join(parts)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix + "\U0010ffff"


class Watcher(Protocol):
    """An open watch. Iterate for events; closing stops the stream.

    Delivery is at-least-once in revision order. If the watcher falls too far behind (its bounded
    queue overflows) the iteration raises ConnectionProblem and the caller re-watches from the
    last revision it processed.
    """

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    async def get(self, key: str) -> Item:
        """Raises NotFound (also for expired items)."""
        ...

    async def get_range(
        self, prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        """Live items whose key starts with ``prefix``, in key order; with ``containing``,
        only those whose value holds those bytes (filtered where the items are stored: a scan
        for a few items among many moves only those)."""
        ...

    async def create(self, item: Item) -> Item:
        """Write only if absent (or expired). Raises AlreadyExists."""
        ...

    async def put(self, item: Item) -> Item:
        """Write unconditionally."""
        ...

    async def update(self, item: Item, expected_revision: int | None = None) -> Item:
        """Write only if present (NotFound), and at ``expected_revision`` when given
        (CompareFailed otherwise)."""
        ...

    async def commit(self, ops: Sequence[Op]) -> list[Item | None]:
        """Apply every op in one transaction, or none.

        Conditions are checked against the state before the transaction (a key appears at most
        once). Each write gets its own revision, in ``ops`` order, and yields exactly one watch
        event, as if the ops had been applied one by one with nobody in between.

        Returns:
            The stored item of each Create/Put/Update, None for each Delete, in ``ops`` order.

        Raises:
            AlreadyExists, NotFound, CompareFailed: the first failed condition (``exc.key`` names
                its key); nothing was written.
            BadParameter: a key named twice, an invalid key or item.
        """
        ...

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        """Replace only if the stored value equals ``expected.value``. Raises CompareFailed
        (also when the key is absent)."""
        ...

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        """Raises NotFound, or CompareFailed when ``expected_revision`` does not match."""
        ...

    async def delete_range(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""
        ...

    async def current_revision(self) -> int:
        """The revision of the latest write (0 for an empty store)."""
        ...

    async def watch(
        self, prefixes: Sequence[str] = ("",), start_revision: int | None = None
    ) -> Watcher:
        """Stream events for keys under any of ``prefixes``.

        ``start_revision=None`` streams only events after the call; ``r`` replays events with
        revision > r first. Raises CompareFailed when events after ``r`` were already trimmed.
        """
        ...

    async def close(self) -> None: ...
