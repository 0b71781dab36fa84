"""The append-only audit log, stored through the backend, one gapless index per event.

Layer: audit (above backend, below auth). Every event gets a leaf ``index``: 0, 1, 2, ... with no
gap and no duplicate, also when several auth servers share one backend (PostgreSQL HA) or several
processes share one SQLite file. The index is the key: the event is stored by a *conditional
create* of ``audit/events/<index, 20 digits>``. A writer only tries ``n + 1`` after it has seen
``n`` exist (it wrote it, or its create failed with AlreadyExists), so by induction the stored
indexes are a prefix of the naturals; the backend's atomic create makes the winner of each index
unique. The stored value is the event's canonical JSON (:func:`bastion.audit.canonical.encode`),
which is exactly what the Merkle tree hashes as the leaf (:mod:`bastion.audit.merkle`).

Events are never updated or deleted through this API. Emitting never fails silently: a failure to
record an event is an error of the action itself (no dropped audit event).

:meth:`AuditLog.emit_once` makes at-least-once delivery idempotent (agents resend their spool
after an outage): each event names a *dedupe key* (``audit/agent-ids/<node>/<id>``) that is
created in the same backend transaction as the event, with a TTL. An event whose key is already
stored is not stored again. The key is never an event key, so the gapless-index argument above is
unchanged: a batch that fails because a dedupe key appeared meanwhile is retried at the same index
after the duplicate is dropped.

:meth:`AuditLog.commit_change` stores an event *together with* the resource writes it records
(backend ops): the event's conditional create and the ops are one :meth:`Backend.commit`
transaction, so a change and its event are stored together or not at all. Changes are group
committed with plain events; a transaction never names a key twice (a change whose keys overlap an
earlier change of the batch waits for the next transaction, so changes apply in order). The
gapless argument is unchanged, because the transaction is all or nothing: when it fails on an
event key (another writer took the index) the batch is retried at the next free index; when it
fails on a change's own key (its condition does not hold: the resource changed) that change alone
fails, with the backend's error, and the rest of the batch is retried at the same index. The event
records what it wrote (``fields.changes``: key, op and the SHA-256 of the stored value) so
``bctl audit verify`` can match every stored resource to the event of its latest write.

:meth:`AuditLog.append_many` is the bulk writers' path (one event per proxied statement or
request): the same events and bytes as :meth:`AuditLog.emit_many`, but encoded straight from the
specs (no event objects) and stored with :func:`bastion.backend.base.create_many` (no stored
items built and returned); a batch of events alone (no dedupe key, no change) takes that path
in every commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, cast

import structlog

from bastion.audit.canonical import (
    PlainTemplate,
    decode,
    encode,
    iso_time,
    plain_bytes,
    plain_parts,
    trusted_event,
    with_index,
)
from bastion.audit.merkle import leaf_hash
from bastion.backend.base import Backend, Create, Delete, Item, Op, check_ops, create_many
from bastion.clock import Clock
from bastion.errors import (
    AlreadyExists,
    BadParameter,
    BastionError,
    CompareFailed,
    ConnectionProblem,
    NotFound,
)
from bastion.types.audit import AuditEvent, event_code

__all__ = [
    "DEDUPE_PREFIX",
    "PREFIX",
    "AuditLog",
    "AuditQuery",
    "BulkEvents",
    "Change",
    "changes_field",
    "event_key",
    "index_of_key",
    "range_prefixes",
]

PREFIX = "audit/events/"
STATE_KEY = "audit/tree/state"
"""The checkpointed tree state (see :mod:`bastion.audit.tree`)."""
"""Events live under this prefix, keyed by their zero-padded index."""
WIDTH = 20
MAX_BATCH = 512
"""Events per backend transaction in a group commit (a proxy session writer's whole batch:
``app_audit.MAX_BATCH``, ``db_route._MAX_BATCH``)."""
LEAF_MEMORY = 100_000
"""Stored events remembered for the checkpointer (~0.3 KiB each; it takes them every
``checkpoint_interval``, 10 s by default: 80,000 at 8,000 events a second)."""
DEDUPE_PREFIX = "audit/agent-ids/"
"""Dedupe keys of :meth:`AuditLog.emit_once` live under this prefix (never under ``PREFIX``)."""
log = structlog.get_logger("bastion.audit")


AUDIT_KEYS = "audit/"
"""Nothing under this prefix may be written by a change: the log's own keys."""


def state_sha256(value: bytes) -> str:
    """The hash an event records for a stored value (hex SHA-256 of the bytes as stored)."""
    return hashlib.sha256(value).hexdigest()


def changes_field(ops: Sequence[Op]) -> list[dict[str, str]]:
    """What an event records about its writes: ``{"key", "op", "state_sha256"}`` per op
    (``state_sha256`` is empty for a delete)."""
    out = []
    for op in ops:
        if isinstance(op, Delete):
            out.append({"key": op.key, "op": "delete", "state_sha256": ""})
        else:
            name = type(op).__name__.lower()
            out.append({"key": op.key, "op": name, "state_sha256": state_sha256(op.item.value)})
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """A stored change: its event and the backend's answer to each op (None for a delete)."""

    event: AuditEvent
    items: list[Item | None]


_EVENT_FIELDS = frozenset(AuditEvent.model_fields)
_PLAIN_TOP = frozenset(
    {"user", "login", "target", "remote_addr", "session_id", "device_id", "reason"}
)
"""Top-level attributes a caller may set that are plain strings (built without validation)."""
_OUTCOMES = ("success", "failure")
_BULK_TYPES = frozenset({"db.session.query", "app.request"})
"""Event types not echoed to the daemon log at info level (one per statement or request)."""


def event_key(index: int) -> str:
    """The backend key of the event at ``index``."""
    return f"{PREFIX}{index:0{WIDTH}d}"


def index_of_key(key: str) -> int | None:
    """The index a well-formed event key names, or None for anything else under the prefix."""
    tail = key[len(PREFIX) :]
    if not key.startswith(PREFIX) or len(tail) != WIDTH or not tail.isdigit():
        return None
    return int(tail)


def range_prefixes(lo: int, hi: int) -> list[str]:
    """Key prefixes whose union covers the indexes ``[lo, hi)`` (and at most 3x as many).

    Keys are zero-padded decimals, so an aligned block of 10^k indexes shares one prefix. The
    block size is the largest power of ten not above the span, so a range needs at most ~12
    ``get_range`` calls; callers filter the overshoot.
    """
    if hi <= lo:
        return []
    block = 1
    while block * 10 <= hi - lo and block * 10 <= 10**WIDTH:
        block *= 10
    digits = len(str(block)) - 1
    out = []
    start = lo - lo % block
    while start < hi:
        out.append(f"{PREFIX}{start:0{WIDTH}d}"[: len(PREFIX) + WIDTH - digits])
        start += block
    return out


@dataclass(frozen=True, slots=True)
class AuditQuery:
    types: tuple[str, ...] = ()
    """Match event types exactly or by prefix ending in ``.`` / ``*`` (``user.*``)."""
    user: str = ""
    since: datetime | None = None
    until: datetime | None = None
    outcome: str = ""
    limit: int = 1000

    def matches(self, event: AuditEvent) -> bool:
        if self.types and not any(_type_matches(t, event.type) for t in self.types):
            return False
        if self.user and event.user != self.user:
            return False
        if self.since and event.time < self.since:
            return False
        if self.until and event.time > self.until:
            return False
        return not (self.outcome and event.outcome != self.outcome)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


@dataclass(slots=True)
class _Draft:
    event: AuditEvent
    once: str | None = None
    """A dedupe key created with the event (:meth:`AuditLog.emit_once`), or None."""
    ttl: timedelta | None = None
    ops: tuple[Op, ...] = ()
    """Resource writes committed with the event (:meth:`AuditLog.commit_change`)."""
    error: BastionError | None = None
    """Why the ops could not be applied (then the event is not stored either)."""
    items: list[Item | None] = field(default_factory=list)
    """The backend's answer to ``ops`` once stored."""


class _Plain:
    """An event of :meth:`AuditLog.append_many` built straight to its canonical bytes, split
    around the index (:func:`~bastion.audit.canonical.plain_parts`): no event object, no
    dedupe key, no ops. ``type``, ``outcome`` and ``user`` are for the daemon log."""

    __slots__ = ("head", "id", "outcome", "tail", "type", "user")
    once: ClassVar[str | None] = None
    ttl: ClassVar[timedelta | None] = None
    ops: ClassVar[tuple[Op, ...]] = ()
    error: ClassVar[BastionError | None] = None

    def __init__(
        self, head: str, tail: str, event_type: str, outcome: str, user: str, event_id: str
    ) -> None:
        self.head = head
        self.tail = tail
        self.id = event_id
        self.type = event_type
        self.outcome = outcome
        self.user = user

    def value(self, index: int) -> bytes:
        return f"{self.head}{index}{self.tail}".encode()


_Entry = _Draft | _Plain


class BulkEvents:
    """Many events of one type and outcome that share most attributes, stored as
    :meth:`AuditLog.append_many` stores them (consecutive indexes, one transaction per batch,
    durable when :meth:`append` returns): what they share is encoded once
    (:class:`~bastion.audit.canonical.PlainTemplate`), each event encodes only its own fields
    (~2 us instead of ~9 for a database statement). Made by :meth:`AuditLog.bulk`."""

    def __init__(
        self, log: AuditLog, event_type: str, outcome: str, shared: Mapping[str, object]
    ) -> None:
        self._log = log
        self._type = event_type
        self._outcome = outcome
        self._shared = dict(shared)
        self._template = log._template(event_type, outcome, self._shared)
        user = self._shared.get("user")
        self._user = user if type(user) is str else ""

    async def append(self, owns: Sequence[Mapping[str, object]]) -> int:
        """Store one event per mapping of ``owns`` (its own fields; a key it shares with the
        shared attributes replaces theirs); returns how many were stored (all)."""
        if not owns:
            return 0
        log = self._log
        template = self._template
        now = log._clock.now()
        stamp = iso_time(now) if type(now) is datetime else None
        if template is None or stamp is None:
            shared = self._shared
            return await log.append_many(
                [(self._type, self._outcome, {**shared, **own}) for own in owns]
            )
        base = int(now.timestamp() * 1e9)
        rand = log._rand.getrandbits
        tail = template.tail(stamp)
        event_type, outcome, user = self._type, self._outcome, self._user
        entries: list[_Entry] = []
        for n, own in enumerate(owns):
            event_id = f"{base + n:020d}-{rand(32):08x}"
            head = template.head(event_id, own if type(own) is dict else dict(own))
            if head is not None:
                entries.append(_Plain(head, tail, event_type, outcome, user, event_id))
            else:  # an own field that is not plain, or a top-level attribute: the general path
                entries.append(
                    log._entry(event_type, outcome, {**self._shared, **own}, stamp, event_id)
                )
        await log._commit(entries)
        return len(entries)


_Stored = AuditEvent | _Plain | None
"""What :meth:`AuditLog._store` answers per entry: the stored event (a plain entry stands for
itself), None for a skipped duplicate or a failed change."""


class AuditLog:
    """Append events with gapless indexes; read them back in index order."""

    def __init__(self, backend: Backend, clock: Clock, cluster: str) -> None:
        self._backend = backend
        self._clock = clock
        self._cluster = cluster
        self._lock = asyncio.Lock()
        self._next: int | None = None
        """The next index to try; None until the head was looked up."""
        self._rand = random.Random(secrets.randbits(64))
        """Id suffixes (unique per process stream; os.urandom per event costs ~0.1 ms)."""
        self._pending: list[tuple[Sequence[_Entry], asyncio.Future[list[_Stored]]]] = []
        self._leaves: OrderedDict[int, tuple[bytes, str, str]] = OrderedDict()
        """Events stored by this process, by index, until the checkpointer takes them."""
        self._codes: dict[tuple[str, str], str] = {}
        """event_code per (type, outcome) seen by :meth:`_plain`."""

    @property
    def backend(self) -> Backend:
        return self._backend

    def _build(self, event_type: str, outcome: str, fields: Mapping[str, object]) -> AuditEvent:
        known = _EVENT_FIELDS  # pydantic's model_fields is a slow property (~1 us a lookup)
        top = {k: v for k, v in fields.items() if k in known and v is not None}
        top.pop("index", None)
        extra = {k: v for k, v in fields.items() if k not in known}
        now = self._clock.now()
        values: dict[str, object] = {
            "type": event_type,
            "code": event_code(event_type, outcome),
            "time": now,
            "cluster": self._cluster,
            "outcome": outcome,
            "fields": extra,
            "id": f"{int(now.timestamp() * 1e9):020d}-{self._rand.getrandbits(32):08x}",
        }
        if (
            type(event_type) is str
            and outcome in _OUTCOMES
            and type(outcome) is str
            and type(now) is datetime
            and top.keys() <= _PLAIN_TOP
            and all(type(v) is str for v in top.values())
        ):  # every attribute has its exact type: what validation would return, ~5 us less
            values.update(top)
            return trusted_event(values)
        return AuditEvent(**values, **top)

    def check(self, event_type: str, outcome: str, fields: Mapping[str, object]) -> None:
        """Raise BadParameter when an event with these attributes could not be stored (a
        top-level attribute of the wrong type, a value canonical JSON cannot encode)."""
        try:
            encode(self._build(event_type, outcome, fields))
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise BadParameter(f"not a storable audit event: {_first_line(exc)}") from None

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent:
        """Record one event. Known attributes go to the top level, the rest to ``fields``.

        Returns the stored event (with its ``index`` and ``id``). Concurrent callers are group
        committed: whoever holds the writer lock stores every pending event in one batch.
        """
        (event,) = await self.emit_many([(event_type, outcome, fields)])
        return event

    async def emit_many(
        self, specs: Sequence[tuple[str, str, Mapping[str, object]]]
    ) -> list[AuditEvent]:
        """Record several events ``(type, outcome, fields)`` with consecutive indexes, in one
        backend transaction where the backend supports batches."""
        build = self._build
        drafts = [_Draft(build(t, o, f)) for t, o, f in specs]
        stored = await self._commit(drafts)
        # Drafts only: every slot is the stored event (no dedupe key: none is skipped).
        return cast(list[AuditEvent], stored)

    async def append_many(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> int:
        """:meth:`emit_many` for bulk writers that do not need the stored events back (the
        proxies' per-statement and per-request events), with consecutive indexes, in one
        backend transaction per :data:`MAX_BATCH`. The events of one call share one clock
        reading (their ids differ in the time part, ``+ 1`` each, and in the random part).
        An event whose attributes are all plain (exact strings on top, plain JSON
        ``fields``: every bulk event) is encoded straight from its spec, without an event
        object (the bytes :func:`~bastion.audit.canonical.plain_bytes` gives the event
        :meth:`emit_many` would build), and batches of such events are stored with
        :func:`~bastion.backend.base.create_many`. Returns how many events were stored (all).
        """
        if not specs:
            return 0
        now = self._clock.now()
        stamp = iso_time(now) if type(now) is datetime else None
        base = 0 if stamp is None else int(now.timestamp() * 1e9)
        rand = self._rand.getrandbits
        entry = self._entry
        entries = [
            entry(t, o, f, stamp, f"{base + n:020d}-{rand(32):08x}")
            for n, (t, o, f) in enumerate(specs)
        ]
        await self._commit(entries)
        return len(entries)

    def _entry(
        self,
        event_type: str,
        outcome: str,
        fields: Mapping[str, object],
        stamp: str | None,
        event_id: str,
    ) -> _Entry:
        """A bulk event's entry: encoded directly at ``stamp`` with ``event_id`` when plain,
        else built and validated (its own time and id)."""
        entry = None if stamp is None else self._plain(event_type, outcome, fields, stamp, event_id)
        return _Draft(self._build(event_type, outcome, fields)) if entry is None else entry

    def bulk(self, event_type: str, *, outcome: str = "success", **shared: object) -> BulkEvents:
        """A writer of many ``event_type`` events that share the attributes ``shared`` and
        differ in a few fields (one database session's statements): see :class:`BulkEvents`."""
        return BulkEvents(self, event_type, outcome, shared)

    def _template(
        self, event_type: str, outcome: str, shared: Mapping[str, object]
    ) -> PlainTemplate | None:
        """The :class:`PlainTemplate` of events with the attributes ``shared`` (None when
        such events would not be plain: they take :meth:`append_many`'s general path)."""
        split = _split_top(event_type, outcome, shared)
        if split is None:
            return None
        top, extra = split
        code = event_code(event_type, outcome)
        try:
            return PlainTemplate(
                self._cluster, code, event_type, outcome, top, extra, _EVENT_FIELDS
            )
        except ValueError:
            return None

    def _plain(
        self, event_type: str, outcome: str, fields: Mapping[str, object], stamp: str, event_id: str
    ) -> _Plain | None:
        """The entry of the event :meth:`_build` would make (at time ``stamp``, with id
        ``event_id``), encoded directly; None when that event would not be plain (then the
        caller builds it)."""
        split = _split_top(event_type, outcome, fields)
        if split is None:
            return None
        top, extra = split
        code = self._codes.get((event_type, outcome))
        if code is None:
            code = self._codes[(event_type, outcome)] = event_code(event_type, outcome)
        parts = plain_parts(self._cluster, code, event_type, outcome, stamp, event_id, top, extra)
        if parts is None:
            return None
        return _Plain(parts[0], parts[1], event_type, outcome, top.get("user", ""), event_id)

    async def emit_once(
        self,
        specs: Sequence[tuple[str, str, Mapping[str, object], str | None]],
        ttl: timedelta,
    ) -> list[AuditEvent | None]:
        """Like :meth:`emit_many`, but each spec ends with a dedupe key (under
        :data:`DEDUPE_PREFIX`, or None for none): an event whose key is stored already (or
        repeats an earlier spec) is skipped and its slot is None. The key is created with the
        event, in one transaction on backends with batches (elsewhere right after it), and
        expires after ``ttl``.

        Raises:
            BadParameter: a dedupe key outside :data:`DEDUPE_PREFIX`.
        """
        drafts = []
        for t, o, f, key in specs:
            if key is not None and (
                not key.startswith(DEDUPE_PREFIX) or len(key) == len(DEDUPE_PREFIX)
            ):
                raise BadParameter(f"dedupe keys live under {DEDUPE_PREFIX}")
            drafts.append(_Draft(self._build(t, o, f), key, ttl))
        return cast(list[AuditEvent | None], await self._commit(drafts))  # drafts: no _Plain

    async def commit_change(
        self, event_type: str, ops: Sequence[Op], *, outcome: str = "success", **fields: object
    ) -> Change:
        """Record one event and apply ``ops`` in the same backend transaction, or neither.

        The event gets the next gapless index and a ``changes`` field naming each op's key and
        the SHA-256 of the value it stores (see :func:`changes_field`). Concurrent changes and
        events are group committed.

        Returns:
            The stored event and the stored item of each op (None for a delete).

        Raises:
            AlreadyExists, NotFound, CompareFailed: an op's condition failed (``exc.key`` is the
                op's key); nothing was written, the event neither.
            BadParameter: an op under ``audit/``, or a key named twice.
            ConnectionProblem: the backend failed; the change and event were not written (or,
                when the backend lost its connection during the commit, the outcome is unknown).
        """
        ops = tuple(ops)
        check_ops(ops)
        for op in ops:
            if op.key.startswith(AUDIT_KEYS):
                raise BadParameter(f"a change may not write the audit log's key {op.key!r}")
        fields = {**fields, "changes": changes_field(ops)}
        draft = _Draft(self._build(event_type, outcome, fields), ops=ops)
        (event,) = await self._commit([draft])
        assert isinstance(event, AuditEvent)
        return Change(event, draft.items)

    async def _commit(self, drafts: Sequence[_Entry]) -> list[_Stored]:
        future: asyncio.Future[list[_Stored]] = asyncio.get_running_loop().create_future()
        self._pending.append((drafts, future))
        async with self._lock:
            if not future.done():
                pending, self._pending = self._pending, []
                try:
                    stored = await self._store([d for ds, _ in pending for d in ds])
                except BaseException as exc:
                    err = (
                        exc
                        if isinstance(exc, Exception)
                        else ConnectionProblem(
                            "the audit writer was interrupted; the event may not be stored"
                        )
                    )
                    for _, f in pending:
                        if f is not future and not f.done():
                            f.set_exception(err)
                    raise
                else:
                    pos = 0
                    for ds, f in pending:
                        failed = next((d.error for d in ds if d.error is not None), None)
                        if failed is not None:
                            f.set_exception(failed)
                        else:
                            f.set_result(stored[pos : pos + len(ds)])
                        pos += len(ds)
        events = future.result()
        # Per-statement database events (and per-request app events) are the log's bulk: a
        # daemon log line each halved the database proxy's throughput (bench/db.py); debug
        # level only, and not even a no-op call per event unless debug is on.
        debug = _debug_logging()
        for event in events:
            if event is not None:
                if event.type not in _BULK_TYPES:
                    log.info("audit", type=event.type, outcome=event.outcome, user=event.user)
                elif debug:
                    log.debug("audit", type=event.type, outcome=event.outcome, user=event.user)
        return events

    async def _store(self, drafts: Sequence[_Entry]) -> list[_Stored]:
        """Store ``drafts`` at the next free indexes (None for a duplicate dedupe key or a
        change whose condition failed: its ``error`` is set); the caller holds the writer
        lock."""
        index = await self._head(await self._signed_size()) if self._next is None else self._next
        out: list[_Stored] = []
        seen: set[str] = set()
        try:
            while len(out) < len(drafts):
                chunk, simple = _chunk(drafts, len(out))
                if simple:  # only events: no dedupe key, no change, nothing to answer
                    stored = [_at(entry, index + n) for n, entry in enumerate(chunk)]
                    pairs = [(event_key(index + n), v) for n, (_, v) in enumerate(stored)]
                    try:
                        await create_many(self._backend, pairs)
                    except AlreadyExists:  # another writer took (some of) these indexes
                        index = await self._head(index)
                        continue
                    out.extend(entry for entry, _ in stored)
                    self._remember(index, stored)
                    index += len(chunk)
                    continue
                live = [i for i in await self._not_duplicates(chunk, seen) if not chunk[i].error]
                events: dict[int, AuditEvent | _Plain] = {}
                ops: list[Op] = []
                owners: dict[str, int] = {}
                values: list[tuple[int, bytes]] = []
                for n, i in enumerate(live):
                    draft = chunk[i]
                    events[i], value = _at(draft, index + n)
                    values.append((i, value))
                    ops.append(Create(Item(key=event_key(index + n), value=value)))
                    if isinstance(draft, _Draft):
                        if draft.once:
                            ops.append(Create(self._guard(draft, index + n)))
                        for op in draft.ops:
                            ops.append(op)
                            owners[op.key] = i
                try:
                    results = await self._backend.commit(ops) if ops else []
                except (AlreadyExists, NotFound, CompareFailed) as exc:
                    owner = owners.get(exc.key) if exc.key is not None else None
                    if owner is not None:  # the change's own condition: it fails alone
                        cast(_Draft, chunk[owner]).error = exc
                        continue
                    if not isinstance(exc, AlreadyExists):
                        raise
                    # Another writer holds (some of) these indexes, or stored one of the dedupe
                    # keys meanwhile: find the first free index and check the keys again.
                    index = await self._head(index)
                    continue
                self._remember(index, [(events[i], ops_value) for i, ops_value in values])
                answers = iter(results)
                for i in events:
                    next(answers)  # the event
                    draft = chunk[i]
                    if isinstance(draft, _Draft):
                        if draft.once:
                            seen.add(draft.once)
                            next(answers)
                        draft.items = [next(answers) for _ in draft.ops]
                out.extend(events.get(i) for i in range(len(chunk)))
                index += len(events)
        except BaseException:
            self._next = None  # unknown outcome: look the head up again next time
            raise
        self._next = index
        return out

    def _remember(self, first: int, stored: Sequence[tuple[AuditEvent | _Plain, bytes]]) -> None:
        """Note the leaf hash, id and type of events this process stored at ``first``,
        ``first + 1``...: the checkpointer takes them from here instead of parsing each event
        back (:meth:`stored_leaf`). Bounded: past :data:`LEAF_MEMORY` unclaimed entries
        the oldest are forgotten (the checkpointer parses those)."""
        leaves = self._leaves
        for n, (event, value) in enumerate(stored):
            leaves[first + n] = (leaf_hash(value), event.id, event.type)
        while len(leaves) > LEAF_MEMORY:
            # The oldest in O(1): a plain dict's first key is found by skipping the slots of
            # every key deleted before it, ~15 us per event once the log ran ahead of the
            # checkpointer (the bulk writers' statements made it quadratic).
            leaves.popitem(last=False)

    def stored_leaf(self, index: int) -> tuple[bytes, str, str] | None:
        """``(leaf hash, id, type)`` of the event this process stored at ``index``, handed
        out once (None: not stored here, or forgotten). A stored value with that leaf hash
        is the very bytes written, which name ``index``, that id and that type."""
        return self._leaves.pop(index, None)

    async def _not_duplicates(self, chunk: Sequence[_Entry], seen: set[str]) -> list[int]:
        """Positions in ``chunk`` whose dedupe key (if any) is new: not stored, not in ``seen``
        (stored earlier in this commit) and not repeated earlier in the chunk."""
        live, keys = [], set(seen)
        for i, draft in enumerate(chunk):
            if draft.once is not None:
                if draft.once in keys or await self._present(draft.once):
                    continue
                keys.add(draft.once)
            live.append(i)
        return live

    def _guard(self, draft: _Draft, index: int) -> Item:
        assert draft.once is not None and draft.ttl is not None
        value = json.dumps({"index": index, "id": draft.event.id}).encode()
        return Item(key=draft.once, value=value, expires=self._clock.now() + draft.ttl)

    async def _present(self, key: str) -> bool:
        try:
            await self._backend.get(key)
        except NotFound:
            return False
        return True

    async def _signed_size(self) -> int:
        """The size of the newest checkpointed tree (0 when none or unreadable): the head search
        starts there, so a hole someone cut into signed history is never refilled."""
        try:
            state = json.loads((await self._backend.get(STATE_KEY)).value)
            return max(0, int(state["size"]))
        except (NotFound, ValueError, KeyError, TypeError):
            return 0

    async def size(self, lower: int = 0) -> int:
        """How many events are stored (the next free index), looked up in the backend;
        ``lower``: an index known to be stored or the head (the search starts there)."""
        return await self._head(lower)

    async def _exists(self, index: int) -> bool:
        return await self._present(event_key(index))

    async def _head(self, lower: int = 0) -> int:
        """The first free index at or above ``lower``: exponential then binary search over
        ``get``, O(log n) reads (indexes are a prefix of the naturals, so presence is monotone)."""
        if not await self._exists(lower):
            return lower
        lo, step = lower, 1  # lo exists
        while await self._exists(lo + step):
            lo, step = lo + step, step * 2
        hi = lo + step  # hi is free
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self._exists(mid):
                lo = mid
            else:
                hi = mid
        return hi

    async def read_from(self, index: int, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` events with index >= ``index``, in index order.

        Raises:
            BadParameter: a negative index or a limit below 1.
        """
        return [decode(item.value) for item in await self.read_items(index, limit)]

    async def read_items(self, index: int, limit: int) -> list[Item]:
        """The stored items (canonical bytes) of up to ``limit`` events from ``index`` on, in
        index order; well-formed keys only. Verification hashes these bytes as they are."""
        if index < 0 or limit < 1:
            raise BadParameter("read_from needs index >= 0 and limit >= 1")
        out: list[Item] = []
        lo = index
        while len(out) < limit:
            want = limit - len(out)
            got = await self.read_range(lo, lo + want)
            out.extend(got)
            if not got:
                break  # past the head
            lo += want  # a short range (a deleted event) does not stop the read
        return out

    async def read_range(self, lo: int, hi: int, *, containing: bytes | None = None) -> list[Item]:
        """The stored items of the events in ``[lo, hi)``, in index order: a gapless run from
        ``lo`` (possibly empty) unless events were deleted; with ``containing``, only the
        events whose bytes hold it (filtered by the backend). The key blocks are read newest
        first: the log grows only at its head, and an index is written only after the one
        before it is stored (also by another writer), so whatever a newer block shows was
        stored before the older blocks are read. (Read oldest first, a batch stored between
        two reads showed as a hole the checkpointer reported, ``audit_log_hole``.)"""
        blocks: list[list[Item]] = []
        for prefix in reversed(range_prefixes(lo, hi)):
            blocks.append(
                [
                    item
                    for item in await self._backend.get_range(prefix, containing=containing)
                    if (i := index_of_key(item.key)) is not None and lo <= i < hi
                ]
            )
        return [item for block in reversed(blocks) for item in block]

    async def search(self, query: AuditQuery) -> list[AuditEvent]:
        """Events matching ``query``, oldest (lowest index) first, at most ``query.limit`` (the
        newest ones when more match)."""
        items = await self._backend.get_range(PREFIX)
        out = [e for e in _decode_all(items) if query.matches(e)]
        return out[-query.limit :] if query.limit else out


def _split_top(
    event_type: str, outcome: str, fields: Mapping[str, object]
) -> tuple[dict[str, str], dict[str, object]] | None:
    """``(top-level string attributes, the other fields)`` of a plain event with these
    attributes, as :meth:`AuditLog._build` would split them; None when the event would not be
    plain (a type or outcome that is not an exact string, a top-level attribute that is)."""
    if type(event_type) is not str or type(outcome) is not str or outcome not in _OUTCOMES:
        return None
    extra = dict(fields)
    top: dict[str, str] = {}
    for k in extra.keys() & _EVENT_FIELDS:
        v = extra.pop(k)
        if v is None or k == "index":
            continue  # as _build: a None attribute takes its default, index is assigned
        if k not in _PLAIN_TOP or type(v) is not str:
            return None
        top[k] = v
    return top, extra


def _chunk(drafts: Sequence[_Entry], start: int) -> tuple[Sequence[_Entry], bool]:
    """The drafts from ``start`` that fit one transaction: at most :data:`MAX_BATCH` events,
    and no key written by two changes (the later one goes to the next transaction, so it
    sees the earlier one's result); and whether they are events only (no dedupe key, no
    change, no error)."""
    keys: set[str] = set()
    end = start
    simple = True
    while end < len(drafts) and end - start < MAX_BATCH:
        draft = drafts[end]
        ops = draft.ops
        if ops:  # plain events write nothing else: no set work per event
            own = {op.key for op in ops}
            if own & keys:
                break
            keys |= own
            simple = False
        elif draft.once is not None or draft.error is not None:
            simple = False
        end += 1
    return drafts[start:end], simple


def _at(entry: _Entry, index: int) -> tuple[AuditEvent | _Plain, bytes]:
    """The event ``entry`` stores at ``index`` (a plain entry stands for itself) and its
    canonical bytes."""
    if isinstance(entry, _Plain):
        return entry, entry.value(index)
    event = with_index(entry.event, index)
    value = plain_bytes(event)  # plain events: no pydantic dump (same bytes)
    return event, encode(event) if value is None else value


def _debug_logging() -> bool:
    """Whether the daemon log takes debug lines (True when the logger cannot tell)."""
    enabled = getattr(log, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.DEBUG))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _decode_all(items: Iterable[Item]) -> list[AuditEvent]:
    out = []
    for item in items:
        if index_of_key(item.key) is None:
            continue
        try:
            out.append(decode(item.value))
        except BadParameter as exc:  # tampered or corrupt: verify names it; search goes on
            log.warning("audit_event_unreadable", key=item.key, error=exc.message)
    return out
