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

import contextlib
import hashlib
import hmac
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal, NoReturn

from bastion.audit.log import AuditLog
from bastion.auth.guarded import GuardedAuth
from bastion.auth.server import AuthServer
from bastion.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    BastionError,
    ConnectionProblem,
    LimitExceeded,
)
from bastion.recording.asciicast import MAX_LINE, parse_header
from bastion.recording.store import RecordingMeta, RecordingStore
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
        meta.check()
        if not meta.sha256:
            raise BadParameter("the upload must declare the recording's sha256")
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
                        raise LimitExceeded(
                            f"recording larger than {self.max_bytes} bytes "
                            "(auth_service.recordings.max_bytes)"
                        )
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
        return stored

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
MAX_SCAN = 200_000
"""Events scanned at most per upload (newest first), whatever their time."""


async def find_session_end(
    audit: AuditLog, session_id: str, node: str, not_before: datetime
) -> AuditEvent | None:
    """The ``session.end`` event of ``session_id`` emitted for ``node``, scanning the log from
    the newest event back to ``not_before`` (or :data:`MAX_SCAN` events); None when absent."""
    hi = await audit.size()
    scanned = 0
    while hi > 0 and scanned < MAX_SCAN:
        lo = max(0, hi - SCAN_WINDOW)
        events = await audit.read_from(lo, hi - lo)
        for event in reversed(events):
            if event.session_id == session_id and _ends(event, node):
                return event
            if event.time < not_before:
                return None
        scanned += hi - lo
        hi = lo
    return None


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
        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        await self._service.receive(meta, chunks())
