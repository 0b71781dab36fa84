"""Session recordings on auth: accepting uploads from nodes, and who may list and read them.

Layer: auth service (RBAC + audit around a :class:`~bastion.recording.store.RecordingStore`).

* Upload: only a host identity whose system role may ``create`` ``session`` (nodes), and only
  for its own node name (the one bound to its certificate). The bytes are hashed while they
  stream to a temporary file; the digest must equal the SHA-256 the node declared, and the first
  line must be an asciicast v2 header. A complete recording is accepted only once the
  ``session.end`` event of that session (from that node) is in the audit log with the same
  ``recording_sha256``: the hash in the tamper-evident log and the stored bytes agree. Until the
  event has arrived (the node's event queue and its uploader are independent) the upload is
  answered "unavailable" and the node retries. A recording the node recovered after a crash
  (``complete: false``) has no ``session.end``; it is stored on its own hash. A repeated upload
  of identical bytes (a retry after a lost reply) succeeds; different bytes are refused. A
  database session's recording (written by the proxy's db route, ``node`` = the database) is
  matched against its ``db.session.end`` the same way.
* List: with ``list`` on ``session`` (auditors, editors) every recording; otherwise the caller's
  own sessions only (filtered per item).
* Read: the owner, or ``read`` on ``session``; every view and download is audited
  (``recording.view`` / ``recording.download``), and a refusal is audited as ``access.denied``.
  The bytes are hashed again before they are served: a recording modified in the store is
  refused (``recording.rejected``), never shown as if it were the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal, NoReturn

from bastion.audit.canonical import decode
from bastion.audit.log import AuditLog, index_of_key
from bastion.auth.guarded import GuardedAuth
from bastion.auth.server import AuthServer
from bastion.backend.base import Item
from bastion.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    BastionError,
    ConnectionProblem,
    LimitExceeded,
)
from bastion.recording.asciicast import MAX_LINE, parse_header
from bastion.recording.store import LocalRecordingStore, RecordingMeta, RecordingStore
from bastion.types.audit import AuditEvent

__all__ = [
    "GuardedRecordings",
    "InProcessTarget",
    "RecordingService",
    "StoredRecording",
    "find_session_end",
]

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredRecording:
    meta: RecordingMeta
    data: bytes


class RecordingService:
    """Verification and storage of uploads (no RBAC here; see :class:`GuardedRecordings`).

    Raises:
        BadParameter: auth has no recording store configured.
    """

    def __init__(self, auth: AuthServer) -> None:
        if auth.deps.recordings is None:
            raise BadParameter("session recordings are not configured on this auth server")
        self.auth = auth
        self.store: RecordingStore = auth.deps.recordings
        self.max_bytes = auth.deps.recording_max_bytes

    async def receive(
        self, meta: RecordingMeta, chunks: AsyncIterable[bytes], emitted_by: str | None = None
    ) -> RecordingMeta:
        """Stream ``chunks`` to a temporary file, verify them against ``meta``, store them
        (``emitted_by``: the session's end event must have been submitted by this identity).

        Returns:
            The stored metadata (with ``size``, ``cluster`` and ``uploaded`` set by auth).

        Raises:
            BadParameter: the bytes do not match the declared SHA-256, or are not asciicast v2.
            LimitExceeded: larger than the configured maximum.
            AlreadyExists: other bytes are stored for this session already.
        """
        _check_declared(meta)
        fd, name = tempfile.mkstemp(prefix="bastion-recording-", suffix=".cast")
        path = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _too_large(self.max_bytes)
                    if len(head) <= MAX_LINE and b"\n" not in head:
                        head += chunk[:MAX_LINE]
                    digest.update(chunk)
                    out.write(chunk)
            return await self._verify_and_store(
                meta, path, digest.hexdigest(), size, head, emitted_by
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    async def receive_file(self, meta: RecordingMeta, path: Path) -> RecordingMeta:
        """Like :meth:`receive`, for a recording already in a local file (the all-in-one
        node's spool): hashed in a worker thread and stored from there, with no copy through
        a temporary file and no file IO on the event loop."""
        _check_declared(meta)
        if isinstance(self.store, LocalRecordingStore):  # copied: the file may change later
            stored, _ = await self._receive_local(self.store, meta, path, None, link=False)
            return stored
        sha256, size, head = await asyncio.to_thread(_hash_file, path, self.max_bytes)
        return await self._verify_and_store(meta, path, sha256, size, head)

    async def receive_spooled(
        self, meta: RecordingMeta, path: Path, remove: Callable[[], None]
    ) -> bool:
        """Like :meth:`receive_file` for a spooled recording (fsynced, never written again)
        that ``remove`` deletes once it is stored: with a local store, the hash, the checks, the
        store (by hard link) and ``remove`` run in ONE worker-thread hop. True when ``remove``
        ran (False: the caller removes it; identical bytes were stored already)."""
        _check_declared(meta)
        if isinstance(self.store, LocalRecordingStore):
            _, removed = await self._receive_local(self.store, meta, path, remove, link=True)
            return removed
        await self.receive_file(meta, path)
        return False

    async def receive_bytes(self, meta: RecordingMeta, data: bytes) -> RecordingMeta:
        """Like :meth:`receive_file` for a recording held in memory (the all-in-one node's
        short sessions, never spooled): with a local store, hashed, checked and stored in one
        worker-thread hop, with no spool file made or removed."""
        _check_declared(meta)
        if isinstance(self.store, LocalRecordingStore):
            stored, _ = await self._receive_local(self.store, meta, data, None, link=False)
            return stored
        return await self.receive(meta, _one_chunk(data))

    async def _receive_local(
        self,
        store: LocalRecordingStore,
        meta: RecordingMeta,
        source: Path | bytes,
        remove: Callable[[], None] | None,
        *,
        link: bool,
    ) -> tuple[RecordingMeta, bool]:
        """The session end is looked up first (the bytes are hashed, checked and stored in the
        same worker-thread hop after it); a mismatch is rejected and audited all the same."""
        if meta.complete:
            await self._check_session_end(meta)
        stored = meta.model_copy(
            update={"cluster": self.auth.cluster, "uploaded": self.auth.clock.now()}
        )
        outcome, stored = await asyncio.to_thread(
            _store_local, store, stored, source, self.max_bytes, remove, link
        )
        if outcome == "mismatch":
            await self._reject(
                meta,
                "recording bytes do not match the declared sha256",
                "the bytes do not match the sha256 of session.end",
                received_sha256=stored.sha256,
            )
        if outcome == "exists":
            existing = await store.meta(meta.session_id)
            if hmac.compare_digest(existing.sha256, meta.sha256):
                return existing, False  # a retry of an upload whose reply was lost
            raise AlreadyExists(f"recording {meta.session_id} is stored already")
        await self._emit_upload(meta, stored.size)
        return stored, remove is not None

    async def _verify_and_store(
        self,
        meta: RecordingMeta,
        path: Path,
        sha256: str,
        size: int,
        head: bytes,
        emitted_by: str | None = None,
    ) -> RecordingMeta:
        if not hmac.compare_digest(sha256, meta.sha256):
            await self._reject(
                meta,
                "recording bytes do not match the declared sha256",
                "the bytes do not match the sha256 of session.end",
                received_sha256=sha256,
            )
        parse_header(head.partition(b"\n")[0])
        if meta.complete:
            await self._check_session_end(meta, emitted_by)
        stored = meta.model_copy(
            update={"size": size, "cluster": self.auth.cluster, "uploaded": self.auth.clock.now()}
        )
        try:
            await self.store.put(stored, path)
        except AlreadyExists:
            existing = await self.store.meta(meta.session_id)
            if hmac.compare_digest(existing.sha256, meta.sha256):
                return existing  # a retry of an upload whose reply was lost
            raise
        await self._emit_upload(meta, size)
        return stored

    async def _emit_upload(self, meta: RecordingMeta, size: int) -> None:
        await self.auth.audit.emit(
            "recording.upload",
            user=meta.user,
            login=meta.login,
            session_id=meta.session_id,
            target=meta.node,
            sha256=meta.sha256,
            size=size,
            complete=meta.complete,
            input_recorded=meta.input_recorded,
        )

    async def _check_session_end(self, meta: RecordingMeta, emitted_by: str | None = None) -> None:
        end = await find_session_end(
            self.auth.audit, meta.session_id, meta.node, self.auth.clock.now() - LOOKBACK
        )
        if end is None:
            raise ConnectionProblem(
                f"recording {meta.session_id}: its session.end event is not in the audit log "
                "yet; retry after the node's events are delivered"
            )
        if emitted_by is not None and end.fields.get("emitted_by") != emitted_by:
            await self._reject(
                meta,
                f"session.end was not submitted by the uploader {emitted_by!r}",
                "its session.end was reported by another proxy",
            )
        recorded = str(end.fields.get("recording_sha256", ""))
        if not hmac.compare_digest(recorded, meta.sha256):
            await self._reject(
                meta,
                "recording sha256 differs from the session.end event",
                "sha256 differs from the one in session.end",
                session_end_sha256=recorded,
            )

    async def _reject(
        self, meta: RecordingMeta, reason: str, message: str, **hashes: str
    ) -> NoReturn:
        """Audit ``recording.rejected`` and refuse the upload."""
        await self.auth.audit.emit(
            "recording.rejected",
            outcome="failure",
            user=meta.user,
            session_id=meta.session_id,
            target=meta.node,
            reason=reason,
            declared_sha256=meta.sha256,
            **hashes,
        )
        raise BadParameter(f"recording {meta.session_id}: {message}")


LOOKBACK = timedelta(days=7)
"""How far back (by event time) auth looks for a recording's ``session.end``."""
SCAN_WINDOW = 512
"""Events read per backend range read."""
FIRST_WINDOW = 16
"""Events read first when catching up with what was appended since the previous lookup
(usually a few per upload: a window of 16 is ~2 key prefixes of 10 events, where one of
:data:`SCAN_WINDOW` reads ~6 prefixes of 100 and filters most of them out)."""
PLAIN_BLOCKS = 3
"""Blocks of 10 events read as they are before a lookup finds the head and filters the rest
in the store (a connection's upload usually follows fewer than 30 events; past that, a head
search and a filtered read cost fewer backend reads than the blocks would)."""
RECENT = 256
"""Session-end events kept decoded (the newest), so that the upload that follows its
session's end needs no second read of it."""
MAX_SCAN = 200_000
"""Events older than the first lookup's head looked at at most (newest first), whatever their
time; everything appended since is indexed."""
MAX_INDEXED = 100_000
"""Session ends the index remembers (the oldest are forgotten first)."""
_END_MARK = b'session.end"'
"""In the canonical bytes of every ``session.end`` / ``db.session.end`` event (its type)."""


class _EndIndex:
    """Where the session-end events of one audit log are: session id → event indexes.

    Built from the log's stored bytes, each event read once: forward from the head seen at
    the previous lookup (the events appended since), and, for an older session, backward from
    the first lookup's head by windows (at most :data:`MAX_SCAN` events). Only an event whose
    bytes carry a session-end type is decoded (a statement event, the log's bulk, is not).
    Replaces a scan of the newest events per upload (a head search and hundreds of decodes:
    most of a database connection's CPU on auth when every session is recorded)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.ends: OrderedDict[str, list[int]] = OrderedDict()
        """Oldest first (by index), so that the oldest are forgotten first."""
        self.hi: int | None = None
        """The next index to read forward (None until the first lookup)."""
        self.lo = 0
        """The lowest index read; the backward scan continues below it."""
        self.floor = 0
        """The backward scan stops here (:data:`MAX_SCAN` below the first head, events older
        than the lookback, or above a forgotten session end)."""
        self.recent: OrderedDict[int, AuditEvent] = OrderedDict()
        """The newest session ends read forward, decoded, by index (at most :data:`RECENT`)."""

    def note(self, items: Sequence[Item], *, older: bool = False) -> None:
        """Index the session ends among ``items`` (in index order; ``older``: all of them
        below what is indexed already)."""
        for item in reversed(items) if older else items:
            if _END_MARK not in item.value:
                continue
            index = index_of_key(item.key)
            event = decode(item.value)
            if index is None or not event.session_id or not event.type.endswith("session.end"):
                continue
            if not older:
                self.recent[index] = event
                if len(self.recent) > RECENT:
                    self.recent.popitem(last=False)
            known = self.ends.get(event.session_id)
            if known is None:
                self.ends[event.session_id] = known = []
                if older:
                    self.ends.move_to_end(event.session_id, last=False)
            known.append(index)
        while len(self.ends) > MAX_INDEXED:
            _, gone = self.ends.popitem(last=False)
            self.floor = max(self.floor, max(gone) + 1)
            self.lo = max(self.lo, self.floor)

    async def refresh(self, audit: AuditLog, *, thorough: bool = False) -> None:
        """Read what was appended since the last lookup (the first: find the head).

        Fast: the aligned block of 10 indexes holding the last head, one backend read; when
        it is not full the head is in it (the usual case: a few events per upload; up to
        :data:`PLAIN_BLOCKS` blocks are read so). Else the
        head (the first free index, :meth:`AuditLog.size`), and the session ends below it: the
        backend filters the events by :data:`_END_MARK`, so only those cross (a hundred
        thousand statements appended since weigh a scan in the store, not a read and a decode
        each: reading them back cost the database sessions running meanwhile ~35% more CPU).
        ``thorough``: windows by :meth:`AuditLog.read_range`, whose answer skips a missing
        (deleted) event inside the window, for when the fast read stopped at one; a window
        that ends short holds the head (or a batch being stored, which the next refresh
        reads: never stepped over).
        """
        if self.hi is None:
            self.hi = self.lo = await audit.size()
            self.floor = max(0, self.hi - MAX_SCAN)
        if not thorough:
            lo = self.hi - self.hi % 10
            for _ in range(PLAIN_BLOCKS):
                items = await audit.read_range(lo, lo + 10)  # one key prefix, one read
                self._advance([i for i in items if (index_of_key(i.key) or 0) >= self.hi])
                if len(items) < 10:
                    return
                lo += 10
            head = await audit.size(lo)  # the blocks were full: lo <= the head
            self.note(await audit.read_range(lo, head, containing=_END_MARK))
            self.hi = max(self.hi, head)
            return
        window = FIRST_WINDOW
        while True:
            end = self.hi + window
            items = await audit.read_range(self.hi, end)
            if not items:
                return
            self._advance(items)
            if self.hi < end:
                return
            window = SCAN_WINDOW

    def _advance(self, items: Sequence[Item]) -> None:
        """Index ``items`` (read forward, from :attr:`hi` on) and move :attr:`hi` past them."""
        if not items:
            return
        self.note(items)
        last = index_of_key(items[-1].key)
        assert self.hi is not None
        self.hi = max(self.hi, (last if last is not None else self.hi) + 1)

    async def older(self, audit: AuditLog, not_before: datetime) -> bool:
        """Index one more window below :attr:`lo`; False when there is nothing left to read
        (the floor, or events older than ``not_before``)."""
        if self.lo <= self.floor:
            return False
        lo = max(self.floor, self.lo - SCAN_WINDOW)
        items = [
            item
            for item in await audit.read_items(lo, self.lo - lo)
            if (index_of_key(item.key) or 0) < self.lo  # a hole lets the read run on
        ]
        self.note(items, older=True)
        self.lo = lo
        if items and decode(items[0].value).time < not_before:
            self.floor = lo  # what lies below is older still: never read again
            return False
        return True

    async def find(
        self, audit: AuditLog, session_id: str, node: str, not_before: datetime
    ) -> AuditEvent | None:
        async with self.lock:
            await self.refresh(audit)
            checked: set[int] = set()
            thorough = False
            while True:
                for index in sorted(self.ends.get(session_id, ()), reverse=True):
                    if index in checked:
                        continue
                    checked.add(index)
                    known = self.recent.get(index)
                    for event in [known] if known else await audit.read_from(index, 1):
                        if (
                            event.index == index
                            and event.session_id == session_id
                            and _ends(event, node)
                            and event.time >= not_before
                        ):
                            return event
                if not thorough:  # past a missing event, if any, before looking further back
                    thorough = True
                    await self.refresh(audit, thorough=True)
                    continue
                if not await self.older(audit, not_before):
                    return None


_INDEXES: weakref.WeakKeyDictionary[AuditLog, _EndIndex] = weakref.WeakKeyDictionary()


async def find_session_end(
    audit: AuditLog, session_id: str, node: str, not_before: datetime
) -> AuditEvent | None:
    """The newest ``session.end`` event of ``session_id`` emitted for ``node`` at or after
    ``not_before``; None when absent. An index per audit log (:class:`_EndIndex`) makes this a
    read of the events appended since the previous lookup, not a scan of the log."""
    index = _INDEXES.get(audit)
    if index is None:
        index = _INDEXES[audit] = _EndIndex()
    return await index.find(audit, session_id, node, not_before)


def _ends(event: AuditEvent, node: str) -> bool:
    """The end of a session on ``node``: an SSH ``session.end`` (its target), or a database
    ``db.session.end`` of the proxy's db route (the database, ``db_service``)."""
    if event.type == "session.end":
        return event.target == node
    return event.type == "db.session.end" and event.fields.get("db_service") == node


Purpose = Literal["view", "download"]


class GuardedRecordings:
    """The recording API for one caller (from :class:`GuardedAuth`)."""

    def __init__(self, guard: GuardedAuth, service: RecordingService) -> None:
        self._guard = guard
        self._service = service
        self._auth = service.auth

    def _may(self, verb: str) -> bool:
        return self._guard.ctx.role_set.check_rule("session", verb).allowed

    async def upload(self, meta: RecordingMeta, chunks: AsyncIterable[bytes]) -> RecordingMeta:
        """A node delivers a recording of one of its sessions."""
        ident = self._guard.ctx.identity
        await self._guard.require("session", "create")
        if ident.kind == "host" and "proxy" in ident.roles and meta.kind == "db":
            # A proxy in its own process records the database sessions it relays (node = the
            # database): only those whose db.session.end it submitted itself.
            return await self._service.receive(meta, chunks, emitted_by=ident.user)
        bound = (ident.traits.get("hostname") or ("",))[0]
        if ident.kind != "host" or not bound or meta.node != bound:
            await self._auth.audit.emit(
                "recording.rejected",
                outcome="failure",
                user=ident.user,
                session_id=meta.session_id,
                target=meta.node,
                remote_addr=self._guard.ctx.remote_addr,
                reason=f"uploader is node {bound!r}, the recording is from {meta.node!r}",
            )
            raise AccessDenied("a node may only upload recordings of its own sessions")
        return await self._service.receive(meta, chunks)

    async def list(self) -> list[RecordingMeta]:
        items = await self._service.store.list()
        if self._may("list"):
            return items
        me = self._guard.ctx.identity.user
        return [m for m in items if m.user == me]

    async def fetch(self, session_id: str, purpose: Purpose) -> tuple[RecordingMeta, Path]:
        """The recording, verified, in a temporary file (the caller streams and deletes it),
        for ``bsh play`` (view) or ``bsh recordings download``. Audited.

        Raises:
            NotFound: no such recording (bastion.errors.NotFound).
            AccessDenied: another user's recording without ``read`` on ``session``.
            BastionError: the stored bytes no longer match their SHA-256.
        """
        ctx = self._guard.ctx
        meta = await self._service.store.meta(session_id)
        if meta.user != ctx.identity.user and not self._may("read"):
            await self._guard.require("session", "read")  # audits access.denied, raises
        fd, name = tempfile.mkstemp(prefix="bastion-recording-", suffix=".cast")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _HashingSink(out)
                await self._service.store.copy_to(session_id, sink)
            await self._check_stored(meta, sink.digest.hexdigest())
            await self._auth.audit.emit(
                f"recording.{purpose}",
                user=ctx.actor,
                session_id=session_id,
                target=meta.node,
                remote_addr=ctx.remote_addr,
                login=meta.login,
                owner=meta.user,
                sha256=meta.sha256,
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        return meta, path

    async def _check_stored(self, meta: RecordingMeta, actual: str) -> None:
        if not meta.sha256 or hmac.compare_digest(actual, meta.sha256):
            return
        await self._auth.audit.emit(
            "recording.rejected",
            outcome="failure",
            user=self._guard.ctx.actor,
            session_id=meta.session_id,
            target=meta.node,
            reason="the stored recording does not match its sha256 (modified in the store?)",
            declared_sha256=meta.sha256,
            received_sha256=actual,
        )
        raise BastionError(
            f"recording {meta.session_id} does not match its sha256 (the one in session.end): "
            "it was modified or damaged in the recording store; not served"
        )

    async def get(self, session_id: str, purpose: Purpose) -> StoredRecording:
        """Like :meth:`fetch`, with the bytes in memory (small recordings, tests)."""
        meta, path = await self.fetch(session_id, purpose)
        try:
            return StoredRecording(meta, path.read_bytes())
        finally:
            path.unlink(missing_ok=True)


class _HashingSink:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.digest.update(data)
        return self._out.write(data)


class InProcessTarget:
    """The all-in-one node's :class:`~bastion.recording.uploader.UploadTarget`: the recording
    service in the same process (the node is trusted; the bytes are verified all the same)."""

    def __init__(self, service: RecordingService) -> None:
        self._service = service

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        await self._service.receive_file(meta, path)

    async def upload_bytes(self, meta: RecordingMeta, data: bytes) -> None:
        """Deliver a recording held in memory (:meth:`RecordingService.receive_bytes`)."""
        await self._service.receive_bytes(meta, data)

    async def upload_spooled(
        self, meta: RecordingMeta, path: Path, remove: Callable[[], None]
    ) -> bool:
        """Deliver a spooled recording and run ``remove`` in the same worker-thread hop once
        it is stored (:meth:`RecordingService.receive_spooled`); True when it ran."""
        return await self._service.receive_spooled(meta, path, remove)


def _store_local(
    store: LocalRecordingStore,
    meta: RecordingMeta,
    source: Path | bytes,
    max_bytes: int,
    remove: Callable[[], None] | None,
    link: bool,
) -> tuple[Literal["stored", "exists", "mismatch"], RecordingMeta]:
    """Hash ``source`` (a file, or the bytes themselves), check it against ``meta`` (its
    sha256, an asciicast v2 header), store it (``link``: a spooled file, by a hard link) and
    ``remove`` it, in the calling (worker) thread. Returns the outcome and the stored
    metadata (``mismatch``: its ``sha256`` is that of the bytes; nothing stored).

    Raises:
        LimitExceeded: larger than ``max_bytes``.
        BadParameter: not asciicast v2.
    """
    if isinstance(source, Path):
        sha256, size, head = _hash_file(source, max_bytes)
    else:
        sha256, size, head = _hash_bytes(source, max_bytes)
    if not hmac.compare_digest(sha256, meta.sha256):
        return "mismatch", meta.model_copy(update={"sha256": sha256, "size": size})
    parse_header(head.partition(b"\n")[0])
    stored = meta.model_copy(update={"size": size})
    try:
        if link and isinstance(source, Path):  # fsynced, never written again (spooled)
            store.put_durable_file(stored, source)
        else:
            store.put_now(stored, source)
    except AlreadyExists:
        return "exists", stored
    if remove is not None:
        remove()
    return "stored", stored


def _check_declared(meta: RecordingMeta) -> None:
    """An upload's metadata is valid and names the recording's sha256 (BadParameter if not)."""
    meta.check()
    if not meta.sha256:
        raise BadParameter("the upload must declare the recording's sha256")


def _too_large(max_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"recording larger than {max_bytes} bytes (auth_service.recordings.max_bytes)"
    )


def _hash_bytes(data: bytes, max_bytes: int) -> tuple[str, int, bytes]:
    """:func:`_hash_file` of a recording held in memory."""
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return hashlib.sha256(data).hexdigest(), len(data), data[: MAX_LINE + 1]


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _hash_file(path: Path, max_bytes: int) -> tuple[str, int, bytes]:
    """(SHA-256, size, first line) of a recording file.

    Raises:
        LimitExceeded: larger than ``max_bytes``.
    """
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            if len(head) <= MAX_LINE and b"\n" not in head:
                head += chunk[:MAX_LINE]
            digest.update(chunk)
    return digest.hexdigest(), size, head
