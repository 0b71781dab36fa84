"""The database route: PostgreSQL clients through the proxy to a database agent.

Layer: ``proxy`` (IO shell around the pure :mod:`bastion.protocols.postgres` and RBAC).
The listener has done TLS with the user's client certificate (user TLS CA), reached either
in-band (psql's SSLRequest on the shared port, answered ``S``) or with ALPN
``bastion-postgres/1`` (``bsh proxy db``). Then, per connection:

1. Read the StartupMessage (a second SSLRequest is refused; a GSSENCRequest answered ``N``).
2. Authorize: the certificate must carry a database route (``bsh db login``) naming the
   database resource; the startup's ``user``/``database`` must be the route's when the route
   names them; the gate (user exists, epoch, locks on the identity); RBAC
   :meth:`~bastion.rbac.checker.RoleSet.check_db_access` over the database's labels, db user and
   db name; locks on the user, its roles and the database (``node`` target = database name).
   Startup ``options`` (SQL settings smuggled into the startup packet) are refused. Every
   refusal is an ErrorResponse with SQLSTATE 28000, so ``psql`` prints one clean line; the
   reason goes to audit (``db.session.start``, outcome failure).
3. Dial the agent serving the database through its reverse tunnel (stream header ``type: db``
   with the startup parameters); the agent connects to the database with TLS and its db client
   certificate as the db user, and everything after is relayed.
4. Every statement the client sends is audited as ``db.session.query`` (simple Query, and
   Execute of a portal bound with its parameter values); the session is registered in the
   LiveRegistry (kind ``db``) so that a lock ends it with an ErrorResponse naming the lock.
   ``db.session.end`` carries the byte counts. With ``recordings``, each audited statement is
   also written to the session's recording (:mod:`bastion.recording.dbcast`, asciicast v2) in
   the spool (a session shorter than a second: in memory); ``db.session.end`` carries its
   ``session_id`` and ``recording_sha256``, then the uploader delivers it to auth
   (``bsh recordings ls`` / ``bsh play``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from hashlib import sha256
from typing import Any, Generic, Protocol, TypeVar, cast

from bastion.audit.emitter import Emitter, SessionEvents
from bastion.auth.gate import IdentityGate
from bastion.clock import Clock, in_zone
from bastion.errors import (
    AccessDenied,
    BastionError,
    ConnectionProblem,
    NotFound,
    RemoteProtocolError,
)
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import effective_mode, identity_targets
from bastion.locks.watcher import LockWatcher
from bastion.protocols import mysql, mysql_compress
from bastion.protocols.pgcopy import CopyReport, CopyWatch
from bastion.protocols.postgres import (
    MAX_MESSAGE_LENGTH,
    BackendKeyScanner,
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    Statement,
    StatementScanner,
    StatementTracker,
    error_response,
    parse_startup_packet,
)
from bastion.proxy.db_moderation import DbModerationHub, ReadyHold
from bastion.proxy.mysql_compressed import CompressingTransport
from bastion.proxy.relay import Relay, RelaySide
from bastion.rbac.checker import RoleSet
from bastion.rbac.conditions import AccessContext
from bastion.rbac.db_provision import check_db_identifier, provisioned_roles, with_db_user
from bastion.rbac.db_session_mfa import DB_SCOPE_PREFIX, check_db_session_mfa, db_mfa_required
from bastion.rbac.moderation import policy_sets
from bastion.recording.dbcast import DbCastBuilder, DbCastHeader
from bastion.recording.spool import SpoolFile
from bastion.recording.store import RecordingMeta
from bastion.recording.uploader import Uploader
from bastion.runtime import as_transport
from bastion.services.cache import ResourceCache
from bastion.services.store import Lookup
from bastion.tasks import TaskSet
from bastion.tunnel.server import TunnelServer
from bastion.types.access import Role
from bastion.types.database import Database
from bastion.types.identity import Identity

__all__ = [
    "CacheDatabases",
    "DatabaseDirectory",
    "DbRoute",
    "DbRouteDeps",
    "LocalDbAgent",
    "LocalDbSession",
    "RoleSource",
    "StoreDatabases",
]

log = logging.getLogger(__name__)

_FORWARDED = frozenset({"application_name", "client_encoding", "DateStyle", "TimeZone"})
"""Startup parameters passed on to the database besides user and database (harmless session
settings); ``options`` and replication are refused, anything else dropped."""
_HIGH_WATER = 4096
"""Statements waiting for the audit writer above which the client is not read (back-pressure:
a statement is never dropped)."""
_LOW_WATER = 1024
_HIGH_BULK_BYTES = 4 << 20
"""Bytes of MySQL bulk executes waiting for the audit writer (rows not decoded yet: one item
of the queue can hold a million) above which the client is not read either..."""
_LOW_BULK_BYTES = 1 << 20
"""...until they are below this."""
_FRAMES_BUDGET = 1 << 20
"""Plain bytes a compressed MySQL client's frames give per read at most (the rest is read on
as the database's side drains): a little compressed input never becomes a lot of memory."""
_WRITER_STALL = 60.0
"""At a session's end its audit writer is waited for as long as it stores statements; it is
given up (and what it did not store counted in ``unaudited_queries``) after this many seconds
without progress."""
_FLUSH_INTERVAL = 0.05
"""The audit writer of a session commits its pending statements at most this often..."""
_M = TypeVar("_M")
_RECORDING_FLUSH = 1.0
"""Seconds a recording's lines wait in memory at most before they are appended to its file..."""
_RECORDING_BUFFER = 256 * 1024
"""...or bytes."""
_MAX_BATCH = 512
"""...or as soon as this many are pending (one transaction each)."""


class DatabaseDirectory(Protocol):
    async def get_database(self, name: str) -> Database:
        """Raises: NotFound."""
        ...


class RoleSource(Protocol):
    async def get_roles(self, names: Sequence[str]) -> list[Role]: ...


class LocalDbSession(Protocol):
    """A database connection an in-process agent opened (``bastion.agent.db_service``)."""

    @property
    def server(self) -> asyncio.Transport: ...
    @property
    def to_server(self) -> bytes: ...
    @property
    def to_client(self) -> bytes: ...
    @property
    def release(self) -> Callable[[], Awaitable[None]]: ...


class LocalDbAgent(Protocol):
    """A database agent in this process (:meth:`DbRoute.add_local_agent`)."""

    async def open(self, header: dict[str, Any]) -> LocalDbSession:
        """Raises: BastionError (with ``answer``: the bytes for the client)."""
        ...


def _live(db: Database, now: datetime, name: str) -> Database:
    expires = db.metadata.expires
    if expires is not None and expires <= now:
        raise NotFound(f'database "{name}" is offline (its agent stopped heartbeating)')
    return db


class StoreDatabases:
    """The databases of auth's store (the all-in-one process): heartbeated or ``bctl create``d;
    the store or its watched copy (read-only databases)."""

    def __init__(self, store: Lookup[Database], clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def get_database(self, name: str) -> Database:
        return _live(await self._store.get(name), self._clock.now(), name)


class CacheDatabases:
    """The databases of a watch-fed cache (a proxy in its own process)."""

    def __init__(self, cache: ResourceCache, clock: Clock) -> None:
        self._cache = cache
        self._clock = clock

    async def get_database(self, name: str) -> Database:
        if not self._cache.state.synced and not self._cache.state.resources:
            raise ConnectionProblem("databases are not known yet: the proxy has not synced")
        for db in self._cache.items("db"):
            if isinstance(db, Database) and db.name == name:
                return _live(db, self._clock.now(), name)
        raise NotFound(f'database "{name}" not found')


@dataclass(frozen=True, slots=True)
class DbRouteDeps:
    databases: DatabaseDirectory
    roles: RoleSource
    tunnel: TunnelServer
    audit: Emitter
    registry: LiveRegistry
    clock: Clock
    startup_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float | None = None
    locks: LockWatcher | None = None
    gate: IdentityGate | None = None
    max_message: int = MAX_MESSAGE_LENGTH
    audit_queries: bool = True
    redact_params: bool = False
    moderation: DbModerationHub | None = None
    """Moderated database sessions (``require_session_join`` for ``db``); None: refused."""
    recordings: Uploader | None = None
    """Where session recordings go (its spool, uploaded to auth); None: not recorded."""


class _Refused(AccessDenied):
    """Refused: ``message`` for the client (28000), ``reason`` for audit."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class _FirstMessageReader(asyncio.Protocol, Generic[_M]):
    """Reads a client's first message after TLS (``done``), then pauses: the route decides
    before any byte goes on. Subclasses parse (``data_received``); ``what`` names the message."""

    what = "first message"

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[_M] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def take_over(self, transport: asyncio.Transport, early: bytes) -> None:
        """Read ``transport`` (and the bytes already read from it) from now on."""
        transport.set_protocol(self)
        self.connection_made(transport)
        if early:
            self.data_received(early)
        transport.resume_reading()

    def finish(self, message: _M) -> None:
        self.done.set_result(message)
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_exception(RemoteProtocolError(f"closed before the {self.what}"))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("client went away"))


class _StartupReader(_FirstMessageReader[StartupMessage]):
    """Reads untyped packets until a StartupMessage; answers GSSENCRequest with ``N``."""

    what = "startup message"

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.done.done():
            return
        try:
            while not self.done.done():
                got = parse_startup_packet(bytes(self.buffer))
                if got is None:
                    return
                packet, used = got
                del self.buffer[:used]
                if isinstance(packet, GSSENCRequest) and self.transport is not None:
                    self.transport.write(b"N")
                elif isinstance(packet, SSLRequest):
                    raise RemoteProtocolError("SSLRequest after TLS")
                elif isinstance(packet, CancelRequest):
                    raise RemoteProtocolError("CancelRequest inside a TLS session")
                elif isinstance(packet, StartupMessage):
                    self.finish(packet)
        except RemoteProtocolError as exc:
            self.done.set_exception(exc)


class _QuerySide(RelaySide):
    """The client's side of the relay: frames its messages and reports each statement."""

    def __init__(self, relay: Relay, scanner: StatementScanner, route: DbRoute) -> None:
        super().__init__(relay, "a")
        self.scanner = scanner
        self._route = route
        self._queue()
        self.copy_watch: CopyWatch | None = None
        """PostgreSQL: told of each statement until a COPY starts it (the server's side)."""

    def _queue(self) -> None:
        """The state the audit writer shares with this side (both protocols)."""
        self.statements: deque[Statement | CopyReport | mysql.BulkExecute] = deque()
        """What the audit writer stores next, in order: statements, and each COPY's report
        (after its statement: the server ends a copy after the client sent it); a MySQL bulk
        execute's rows are decoded as the writer takes them (:func:`_take_batch`)."""
        self.copies = False
        """A COPY report was queued (the writer then sorts its batches by event type)."""
        self.pending = asyncio.Event()
        """Set when a statement is queued or the session ended."""
        self.ended = False
        self.throttled = False
        self.bulk_bytes = 0
        """Bytes of the bulk executes queued in :attr:`statements` (MySQL; see _take_batch)."""
        self.stored = 0
        """Statements the audit writer stored so far (its progress)."""

    def tap(self, data: bytes) -> bool:
        scanner = self.scanner
        mark = scanner.copied
        try:
            found = scanner.feed(data)
        except RemoteProtocolError as exc:
            self._route.protocol_error(self, str(exc))
            return False
        if found:
            watch = self.copy_watch
            if watch is not None and watch.scanner is None:
                for statement in found:
                    watch.statement(statement.sql, mark)
            self.statements.extend(found)
            self.pending.set()
            self.hold_if_backlogged()
        return True

    def copied(self, reports: list[CopyReport]) -> None:
        """The server ended COPYs: their reports go to the audit writer with the statements."""
        self.copies = True
        self.statements.extend(reports)
        self.pending.set()

    @property
    def held(self) -> bool:
        return self.throttled  # the audit writer resumes reading once it caught up

    def hold_if_backlogged(self) -> None:
        """Stop reading the client while too much waits for the audit writer (it resumes
        reading once it caught up: :meth:`audited`)."""
        backlogged = len(self.statements) > _HIGH_WATER or self.bulk_bytes > _HIGH_BULK_BYTES
        if backlogged and not self.throttled and self.transport is not None:
            self.throttled = True
            self.transport.pause_reading()

    def audited(self) -> None:
        """The audit writer took statements: read the client again once below the low marks
        (unless the database's side is full: its draining resumes it then)."""
        if (
            self.throttled
            and len(self.statements) < _LOW_WATER
            and self.bulk_bytes < _LOW_BULK_BYTES
        ):
            self.throttled = False
            peer_full = self.peer is not None and self.peer.writing_paused
            if self.transport is not None and not self.lost and not peer_full:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tap(data):
            super().data_received(data)


class _HandshakeReader(_FirstMessageReader[mysql.HandshakeResponse]):
    """MySQL: reads the client's first packet (its HandshakeResponse41, sequence id 1)."""

    what = "handshake response"

    def __init__(self) -> None:
        super().__init__()
        self.packets = mysql.PacketReader(mysql.MAX_HANDSHAKE_LENGTH)
        self.rest = b""

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.rest += data
            return
        try:
            packets = self.packets.feed(data)
            if not packets:
                return
            got = mysql.parse_handshake_response(packets[0].payload)
            if isinstance(got, mysql.SSLRequest):
                raise RemoteProtocolError("SSLRequest inside a TLS session")
            self.rest = b"".join(mysql.build_packet(p.seq, p.payload) for p in packets[1:])
            self.finish(got)
        except RemoteProtocolError as exc:
            self.done.set_exception(exc)


class _MySQLClientSide(_QuerySide):
    """MySQL, the client's side: frames its commands, reports statements, refuses
    ``COM_CHANGE_USER`` / replication and a default database that ``db_names`` does not allow
    (an ERR packet answers them; they never reach the server)."""

    def __init__(
        self,
        relay: Relay,
        tracker: mysql.CommandTracker,
        reader: mysql.PacketReader,
        route: DbRoute,
        check_name: Callable[[str], str | None],
        on_refused: Callable[[str, str], None],
    ) -> None:
        RelaySide.__init__(self, relay, "a")
        self._commands = tracker
        self._packets = reader
        self._route = route
        self._check_name = check_name
        self._on_refused = on_refused
        self._queue()
        self.server_seq = 0
        """Sequence id of the server's last packet since the client's last command."""
        self._frames: mysql_compress.FrameReader | None = None
        self.frame_writer: mysql_compress.FrameWriter | None = None
        self._client_seq = 0
        """Compressed: the sequence id given to the client's last packet."""

    def compressed(self) -> None:
        """The client asked for compression: from now on it sends frames (after the
        handshake, it has nothing else to send), and its transport must be wrapped in a
        :class:`~bastion.proxy.mysql_compressed.CompressingTransport` (:meth:`wrap`) once
        attached, before the handshake's answer goes out."""
        self._frames = mysql_compress.FrameReader()
        self.frame_writer = mysql_compress.FrameWriter(plain_packets=1)  # the handshake's OK

    def wrap(self) -> asyncio.Transport:
        """Compressed: the client's transport, wrapped (see :meth:`compressed`)."""
        assert self.transport is not None and self.frame_writer is not None
        wrapped = CompressingTransport(self.transport, self.frame_writer, self._frames_resumed)
        self.transport = cast(asyncio.Transport, wrapped)
        return self.transport

    def filter(self, data: bytes) -> bytes | None:
        """The bytes of ``data`` to forward (``None``: protocol error, session ended)."""
        if self._frames is not None:
            self._frames.feed(data)
            return self._unframe()
        whole = self._packets.buffered == 0
        try:
            packets = self._packets.feed(data)
            forward: list[mysql.Packet] = []
            for packet in packets:
                if self._allowed(packet):
                    forward.append(packet)
        except RemoteProtocolError as exc:
            self._route.mysql_protocol_error(self, str(exc))
            return None
        self.hold_if_backlogged()
        if whole and self._packets.buffered == 0 and len(forward) == len(packets):
            return data
        return b"".join(mysql.build_packet(p.seq, p.payload) for p in forward)

    def _unframe(self) -> bytes | None:
        """Compressed: the plain packets of the buffered frames, up to
        :data:`_FRAMES_BUDGET` plain bytes at a time (zlib expands up to ~1000:1); the rest
        waits for the next read, or is read soon when nothing holds the client back."""
        frames = self._frames
        assert frames is not None and self.frame_writer is not None
        forward: list[bytes] = []
        size = 0
        try:
            while size < _FRAMES_BUDGET and (plain := frames.next()) is not None:
                self.frame_writer.seq = (frames.last_seq + 1) & 0xFF  # the answer's frames
                size += len(plain)
                for packet in self._packets.feed(plain):
                    # Compressing clients number their packets 0 (Connector/C): the database
                    # gets the numbers it expects on its uncompressed leg.
                    if self._commands.receiving_file:
                        seq = max(self.server_seq, self._client_seq) + 1
                    else:
                        seq = 0
                    self._client_seq = seq
                    packet = mysql.Packet(seq, packet.payload)
                    if self._allowed(packet):
                        forward.append(mysql.build_packet(packet.seq, packet.payload))
        except RemoteProtocolError as exc:
            self._route.mysql_protocol_error(self, str(exc))
            return None
        self.hold_if_backlogged()
        if size >= _FRAMES_BUDGET and frames.buffered:
            asyncio.get_running_loop().call_soon(self._frames_resumed)
        return b"".join(forward)

    def _frames_resumed(self) -> None:
        """Read on in the buffered frames, unless the database's side is full or the audit
        holds the client (their resumes call this again)."""
        if self._frames is None or not self._frames.buffered or self.lost or self.relay.done:
            return
        if self.held or (self.peer is not None and self.peer.writing_paused):
            return
        forward = self._unframe()
        if forward:
            super(_QuerySide, self).data_received(forward)

    def _allowed(self, packet: mysql.Packet) -> bool:
        if packet.seq == 0:
            self.server_seq = 0
        event = self._commands.client(packet)
        if isinstance(event, mysql.UseDatabase):
            refused = self._check_name(event.name)
            if refused is not None:
                self._refuse(
                    packet, mysql.ER_DBACCESS_DENIED, "42000", refused, event.statement.sql
                )
                return False
            event = event.statement
        elif isinstance(event, mysql.Forbidden):
            self._refuse(packet, mysql.ER_ACCESS_DENIED, "28000", event.reason, event.reason)
            return False
        if event is not None:
            if isinstance(event, mysql.BulkExecute):
                self.bulk_bytes += len(event.body)
            self.statements.append(event)
            self.pending.set()
        return True

    def violation(self, reason: str) -> None:
        """The database broke the protocol's rules (asked for a file nobody named): the client
        gets an ERR in answer to its command and the session ends."""
        self._route.mysql_protocol_error(self, reason)

    def _refuse(self, packet: mysql.Packet, code: int, state: str, why: str, sql: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mysql.err_packet(packet.seq + 1, code, state, why))
        self._on_refused(sql, why)

    def data_received(self, data: bytes) -> None:
        forward = self.filter(data)
        if forward is None:
            return
        if forward:
            super(_QuerySide, self).data_received(forward)
        else:
            self.bytes_read += len(data)


class _MySQLServerSide(RelaySide):
    """MySQL, the database's side: follows packet boundaries (no copy) to learn the statement
    ids of PREPARE_OK answers, the end of each LOAD DATA LOCAL (reported to ``client``) and
    the sequence id a lock's ERR packet must carry."""

    def __init__(self, relay: Relay, tracker: mysql.CommandTracker, seq_shift: int = 0) -> None:
        super().__init__(relay, "b")
        self._commands = tracker
        self._scanner = mysql.PacketScanner()
        self._shift = seq_shift
        self.client: _MySQLClientSide | None = None

    def data_received(self, data: bytes) -> None:
        if self._shift and len(data) >= 4:
            # The handshake's answer after an SSLRequest of the client's (MySQL listener):
            # the agent numbers it 2, the client expects 3.
            data, self._shift = mysql.with_seq(data, data[3] + self._shift), 0
        for packet in self._scanner.feed(data, self._commands.wants_server):
            report = self._commands.server(packet)
            if report is None or self.client is None:
                continue
            if isinstance(report, mysql.Forbidden):  # never reaches the client
                self.client.violation(report.reason)
                return
            self.client.copied([report])
        if self.client is not None and self._scanner.last_seq >= 0:
            self.client.server_seq = self._scanner.last_seq
        super().data_received(data)


class _KeyTap(RelaySide):
    """PostgreSQL, the database's side: notes the session's BackendKeyData (for routing a
    CancelRequest to it), reports each COPY to ``client`` once it ended, and relays; with a
    ``hold`` (a proxy that moderates), the first ReadyForQuery waits for :meth:`release` (a
    held session's notice goes first)."""

    def __init__(
        self,
        relay: Relay,
        on_key: Callable[[tuple[int, int]], None],
        client: _QuerySide,
        hold: ReadyHold | None = None,
    ) -> None:
        super().__init__(relay, "b")
        self._client = client
        self._copies = client.copy_watch = CopyWatch(lambda: client.scanner.copied)
        self._scanner: BackendKeyScanner | None = BackendKeyScanner()
        self._on_key = on_key
        self._hold = hold
        self._watching = True
        """The key or the hold still needs the server's bytes (after the startup: no)."""

    def release(self, notice: bytes) -> None:
        """Let the startup's ReadyForQuery go, after ``notice`` (``b""``: none)."""
        if self._hold is not None:
            out = self._hold.release(notice)
            if out:
                super().data_received(out)

    def data_received(self, data: bytes) -> None:
        copied = self._copies.feed(data)  # every byte, held or not, in the order they came
        if copied:
            self._client.copied(copied)
        if self._watching:
            data = self._watch(data)
            if not data:
                return
        super().data_received(data)

    def _watch(self, data: bytes) -> bytes:
        """Look for the key, hold the first ReadyForQuery; what to relay now."""
        scanner = self._scanner
        if scanner is not None:
            scanner.feed(data)
            if scanner.done or scanner.key is not None:
                if scanner.key is not None:
                    self._on_key(scanner.key)
                self._scanner = scanner = None
        hold = self._hold
        if hold is not None and not hold.done:
            data = hold.feed(data)
            self._watching = True
        else:
            self._watching = scanner is not None
        return data


@dataclass(frozen=True, slots=True)
class _CancelTarget:
    """Where a CancelRequest with a session's key goes, and who may send it."""

    db: str
    host_id: str
    db_user: str
    user: str
    client_ip: str


class _Discard(asyncio.Protocol):
    """The proxy's end of a cancel stream: nothing comes back; closed by the agent."""

    def eof_received(self) -> bool:
        return False


class DbRoute:
    """Serves database connections handed over by the listener."""

    def __init__(self, deps: DbRouteDeps) -> None:
        self._deps = deps
        self._tasks = TaskSet()
        self._cancel_keys: dict[tuple[int, int], _CancelTarget] = {}
        self._uploading: asyncio.Task[None] | None = None
        self._tick = _Ticker(_FLUSH_INTERVAL)
        self._local_agents: dict[str, LocalDbAgent] = {}
        if deps.recordings is not None:  # before any session opens a recording
            deps.recordings.recover()

    async def handle(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        client_addr: tuple[str, int],
        early: bytes = b"",
    ) -> None:
        """Serve one authenticated client connection until its relay ends."""
        deps = self._deps
        remote = f"{client_addr[0]}:{client_addr[1]}"
        reader = _StartupReader()
        reader.take_over(transport, early)
        startup: StartupMessage | None = None
        info: dict[str, str] = {"db_service": "", "db_user": "", "db_name": ""}
        try:
            async with asyncio.timeout(deps.startup_timeout):
                startup = await reader.done
            async with asyncio.timeout(deps.connect_timeout):
                extra: dict[str, Any] = {}
                db, params = await self._authorize(identity, startup, client_addr, info, extra)
                relay = Relay(idle_timeout=deps.idle_timeout, name=f"db {remote}")
                side = _QuerySide(
                    relay,
                    StatementScanner(
                        StatementTracker(redact_params=deps.redact_params), deps.max_message
                    ),
                    self,
                )
                target = _CancelTarget(
                    db.metadata.name, db.spec.host_id, params["user"], identity.user,
                    client_addr[0],
                )  # fmt: skip
                keys: list[tuple[int, int]] = []

                def on_key(key: tuple[int, int]) -> None:
                    keys.append(key)
                    self._cancel_keys[key] = target

                hold = ReadyHold() if deps.moderation is not None else None
                relay.b = _KeyTap(relay, on_key, side, hold)
                side.peer, relay.b.peer = relay.b, side
                relay.a = side
                header: dict[str, Any] = {
                    "type": "db",
                    "db": db.metadata.name,
                    "params": params,
                    "user": identity.user,
                    "client_addr": remote,
                    **extra,  # "provision": database roles (create_db_user)
                }
                release = await self._dial(db, header, relay)
        except (BastionError, OSError, TimeoutError) as exc:
            await self._refuse_start(transport, identity, remote, info, exc, error_response)
            return
        except asyncio.CancelledError:
            transport.abort()
            raise
        try:
            rest = bytes(reader.buffer)
            if rest and not side.tap(rest):
                return
            relay.attach_a(transport, rest)
            relay.start()
            await self._run(
                relay, side, transport, identity, info, remote,
                lambda r: error_response(r, code="57P01"),
            )  # fmt: skip
        finally:
            for key in keys:
                self._cancel_keys.pop(key, None)
            if release is not None:
                await release()

    def add_local_agent(self, host_id: str, agent: LocalDbAgent) -> None:
        """Serve the databases of agent ``host_id`` (running in this process) without its
        tunnel: the relay's database side is the agent's own TLS connection to the database
        (:meth:`bastion.agent.db_service.DbAgent.open`: the agent still presents its db client
        certificate; only the in-memory hop and its framing are gone)."""
        self._local_agents[host_id] = agent

    async def _dial(
        self, db: Database, header: dict[str, Any], relay: Relay
    ) -> Callable[[], Awaitable[None]] | None:
        """Attach ``relay.b`` to the database: through the in-process agent serving it, or a
        stream of its agent's reverse tunnel. Returns what to await once the session ended
        (an in-process agent's clean-up; None for a tunnel, whose agent cleans up itself).

        Raises:
            BastionError: the agent is offline, or refused (``answer``: its reply to the client).
        """
        local = self._local_agents.get(db.spec.host_id)
        if local is None:
            await self._deps.tunnel.dial(db.spec.host_id, header, lambda: relay.b)
            return None
        opened = await local.open(header)
        server = opened.server
        server.set_protocol(relay.b)
        relay.b.connection_made(server)
        if opened.to_server:
            server.write(opened.to_server)
        if opened.to_client:  # as if the database sent it (MySQL: its OK to the handshake)
            relay.b.data_received(opened.to_client)
        return opened.release

    async def cancel(self, pid: int, secret: int, client_addr: tuple[str, int]) -> bool:
        """A plaintext CancelRequest on the proxy's port: forward it to the agent of the one
        live session whose backend key it carries, only from that session's client address;
        anything else is refused (audited ``db.session.cancel``). Returns whether it went."""
        deps = self._deps
        remote = f"{client_addr[0]}:{client_addr[1]}"
        target = self._cancel_keys.get((pid, secret))
        if target is None or target.client_ip != client_addr[0]:
            reason = "no live session with this cancel key from this address"
            log.info("db cancel from %s refused: %s", remote, reason)
            await deps.audit.emit(
                "db.session.cancel", outcome="failure", remote_addr=remote, reason=reason
            )
            return False
        header: dict[str, Any] = {
            "type": "db",
            "db": target.db,
            "cancel": [pid, secret],
            "params": {"user": target.db_user},
            "user": target.user,
            "client_addr": remote,
        }
        fields: dict[str, str] = {
            "user": target.user, "remote_addr": remote, "db_service": target.db,
            "db_user": target.db_user,
        }  # fmt: skip
        try:
            await deps.tunnel.dial(target.host_id, header, _Discard)
        except BastionError as exc:
            await deps.audit.emit(
                "db.session.cancel", outcome="failure", reason=exc.message, **fields
            )
            return False
        await deps.audit.emit("db.session.cancel", reason="", **fields)
        return True

    async def handle_mysql(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        client_addr: tuple[str, int],
        early: bytes = b"",
        seq_shift: int = 0,
        offered: int | None = None,
    ) -> None:
        """Serve one MySQL client (ALPN ``bastion-mysql/1``): ``bsh proxy db`` (or the MySQL
        listener, ``seq_shift`` 1: the client sent an SSLRequest first) did the server
        greeting and sends the client's HandshakeResponse41 first;
        the agent does the real handshake and answers with the server's OK (sequence id 2).
        ``offered``: the capabilities the MySQL listener's greeting offered; what the client
        asks beyond them is not in effect, so the agent does not ask the database for it
        (``bsh proxy db`` forwards only what is in effect)."""
        deps = self._deps
        remote = f"{client_addr[0]}:{client_addr[1]}"
        reader = _HandshakeReader()
        reader.take_over(transport, early)
        info: dict[str, str] = {"db_service": "", "db_user": "", "db_name": ""}
        try:
            async with asyncio.timeout(deps.startup_timeout):
                hello = await reader.done
            if offered is not None:
                hello = replace(hello, capabilities=hello.capabilities & offered)
            async with asyncio.timeout(deps.connect_timeout):
                extra: dict[str, Any] = {}
                db, roles = await self._authorize_mysql(identity, hello, client_addr, info, extra)
                relay = Relay(idle_timeout=deps.idle_timeout, name=f"mysql {remote}")
                tracker = mysql.CommandTracker(redact_params=deps.redact_params)
                context = self._context(identity, client_addr)

                def check_name(name: str) -> str | None:
                    decision = roles.check_db_access(
                        db.all_labels(), info["db_user"], name,
                        db_service=db.metadata.name, context=context,
                    )  # fmt: skip
                    if decision.allowed:
                        return None
                    return f'access to database "{db.metadata.name}" db name "{name}" denied'

                def on_refused(sql: str, why: str) -> None:
                    self._tasks.spawn(
                        deps.audit.emit(
                            "db.session.query", outcome="failure", user=identity.user,
                            query=sql, parameters=[], protocol="refused", reason=why, **info,
                        ),
                        "db-query-refused",
                    )  # fmt: skip

                side = _MySQLClientSide(
                    relay, tracker, mysql.PacketReader(deps.max_message), self,
                    check_name, on_refused,
                )  # fmt: skip
                if hello.capabilities & mysql.CLIENT_COMPRESS:
                    side.compressed()
                server = _MySQLServerSide(relay, tracker, seq_shift)
                server.client = side
                side.peer, server.peer = server, side
                relay.a, relay.b = side, server
                header: dict[str, Any] = {
                    "type": "db",
                    "protocol": "mysql",
                    "db": db.metadata.name,
                    "params": {
                        "user": info["db_user"],
                        "database": hello.database if hello.database else "",
                        "capabilities": str(hello.capabilities),
                        "charset": str(hello.charset),
                        "max_packet": str(hello.max_packet),
                    },
                    "attrs": dict(list(hello.attrs.items())[:32]),
                    "user": identity.user,
                    "client_addr": remote,
                    **extra,  # "provision": database roles (create_db_user)
                }
                release = await self._dial(db, header, relay)
        except (BastionError, OSError, TimeoutError) as exc:
            answer = getattr(exc, "answer", None)
            if seq_shift and isinstance(answer, bytes) and len(answer) >= 4:
                exc.answer = mysql.with_seq(answer, answer[3] + seq_shift)  # type: ignore[union-attr]
            await self._refuse_start(
                transport, identity, remote, info, exc,
                lambda message: mysql.err_packet(
                    2 + seq_shift, mysql.ER_ACCESS_DENIED, "28000", message
                ),
            )  # fmt: skip
            return
        except asyncio.CancelledError:
            transport.abort()
            raise

        def goodbye(reason: str) -> bytes:
            code = mysql.ER_CONNECTION_KILLED
            return mysql.err_packet(side.server_seq + 1, code, "70100", reason)

        try:
            rest = side.filter(reader.rest) if reader.rest else b""
            if rest is None:
                return
            relay.attach_a(transport, rest)
            if side.frame_writer is not None:  # before the handshake's answer goes out
                transport = side.wrap()
            relay.start()
            await self._run(relay, side, transport, identity, info, remote, goodbye)
        finally:
            if release is not None:
                await release()

    async def _authorize_mysql(
        self,
        identity: Identity,
        hello: mysql.HandshakeResponse,
        client_addr: tuple[str, int],
        info: dict[str, str],
        extra: dict[str, Any] | None = None,
    ) -> tuple[Database, RoleSet]:
        deps = self._deps
        route = identity.route
        if route is None or not route.db_service:
            raise _Refused(
                "this certificate is not for a database: run bsh db login NAME first",
                "certificate without a database route",
            )
        db_user = hello.user or route.db_user
        db_name = hello.database or route.db_name
        info.update(db_service=route.db_service, db_user=db_user, db_name=db_name)
        if route.db_user and db_user != route.db_user:
            raise _Refused(
                f'certificate is for db user "{route.db_user}", not "{db_user}": '
                f"run bsh db login {route.db_service} --db-user {db_user}"
            )
        if not db_user:
            raise _Refused("no database user: pass --user (or bsh db login --db-user)")
        if deps.gate is not None:
            refused = await deps.gate.refusal(_gated(identity), "user", login=db_user)
            if refused is not None:
                raise _Refused(refused.error.message, refused.reason)
        try:
            db = await deps.databases.get_database(route.db_service)
        except NotFound:
            raise _Refused(f'database "{route.db_service}" not found') from None
        if db.spec.protocol != "mysql":
            raise _Refused(f'database "{route.db_service}" does not speak MySQL')
        roles = await self._check_access(identity, db, db_user, db_name or None, client_addr, extra)
        return db, roles

    def mysql_protocol_error(self, side: _QuerySide, reason: str) -> None:
        """A malformed or oversized MySQL packet: an ERR packet, then the session ends."""
        transport = side.transport
        if transport is not None and not transport.is_closing():
            transport.write(mysql.err_packet(1, 1835, "08S01", f"protocol violation: {reason}"))
        side.relay.terminate(f"protocol violation: {reason}")

    async def _refuse_start(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        remote: str,
        info: Mapping[str, str],
        exc: BaseException,
        error: Callable[[str], bytes],
    ) -> None:
        """A session refused before it started: audited, and the client told in its
        protocol's error (``error``: PostgreSQL ErrorResponse or MySQL ERR packet)."""
        message, reason = _refusal(exc)
        log.info("db route refused %s from %s: %s", identity.user, remote, reason)
        await self._deps.audit.emit(
            "db.session.start", outcome="failure", user=identity.user, remote_addr=remote,
            reason=reason, **info,
        )  # fmt: skip
        if not transport.is_closing():
            answer = getattr(exc, "answer", None)  # an in-process agent's own answer
            transport.write(answer if isinstance(answer, bytes) else error(message))
            transport.close()

    def protocol_error(self, side: _QuerySide, reason: str) -> None:
        """The client sent a malformed or oversized message: tell it and end the session."""
        transport = side.transport
        if transport is not None and not transport.is_closing():
            transport.write(error_response(f"protocol violation: {reason}", code="08P01"))
        side.relay.terminate(f"protocol violation: {reason}")

    def _context(self, identity: Identity, client_addr: tuple[str, int]) -> AccessContext:
        locks = self._deps.locks
        zone = locks.cluster_time_zone if locks is not None else "UTC"
        now: datetime | None
        try:
            now = in_zone(self._deps.clock.now(), zone)
        except ValueError:
            now = None
        return AccessContext.for_identity(identity, source_ip=client_addr[0], time=now)

    async def _authorize(
        self,
        identity: Identity,
        startup: StartupMessage,
        client_addr: tuple[str, int],
        info: dict[str, str],
        extra: dict[str, Any] | None = None,
    ) -> tuple[Database, dict[str, str]]:
        deps = self._deps
        route = identity.route
        if route is None or not route.db_service:
            raise _Refused(
                "this certificate is not for a database: run bsh db login NAME first",
                "certificate without a database route",
            )
        db_user = startup.user or route.db_user
        db_name = startup.params.get("database") or route.db_name or db_user
        info.update(db_service=route.db_service, db_user=db_user, db_name=db_name)
        if route.db_user and db_user != route.db_user:
            raise _Refused(
                f'certificate is for db user "{route.db_user}", not "{db_user}": '
                f"run bsh db login {route.db_service} --db-user {db_user}"
            )
        if route.db_name and db_name != route.db_name:
            raise _Refused(
                f'certificate is for database "{route.db_name}", not "{db_name}": '
                f"run bsh db login {route.db_service} --db-name {db_name}"
            )
        if not db_user:
            raise _Refused("no database user: pass user= (or bsh db login --db-user)")
        if startup.params.get("options") or "replication" in startup.params:
            raise _Refused("startup options and replication are not allowed through the proxy")
        if deps.gate is not None:
            refused = await deps.gate.refusal(_gated(identity), "user", login=db_user)
            if refused is not None:
                raise _Refused(refused.error.message, refused.reason)
        not_found = f'database "{route.db_service}" not found'
        try:
            db = await deps.databases.get_database(route.db_service)
        except NotFound:
            raise _Refused(not_found) from None
        if db.spec.protocol != "postgres":
            raise _Refused(f'database "{route.db_service}" does not speak PostgreSQL')
        await self._check_access(identity, db, db_user, db_name, client_addr, extra)
        params = {"user": db_user, "database": db_name}
        params.update({k: v for k, v in startup.params.items() if k in _FORWARDED})
        return db, params

    async def _check_access(
        self,
        identity: Identity,
        db: Database,
        db_user: str,
        db_name: str | None,
        client_addr: tuple[str, int],
        extra: dict[str, Any] | None = None,
    ) -> RoleSet:
        """RBAC (labels, db user, db name: ``None`` = none chosen yet) and locks; returns the
        role set (MySQL checks later ``COM_INIT_DB`` / ``USE`` against it). With
        ``create_db_user`` (:mod:`bastion.rbac.db_provision`) the db user must be the Bastion
        user name, and ``extra["provision"]`` gets the database roles for the agent."""
        deps = self._deps
        raw = await deps.roles.get_roles(identity.roles)
        grants = provisioned_roles(raw, identity.traits, db.all_labels())
        if grants is not None:
            name = db.metadata.name
            if db_user != identity.user:
                raise _Refused(
                    f'database "{name}" creates your db user: connect as db user '
                    f'"{identity.user}" (bsh db login {name} --db-user {identity.user})',
                    f'db user "{db_user}" is not the user name (create_db_user)',
                )
            check_db_identifier(identity.user)
            raw = with_db_user(raw, identity.user)
            if extra is not None:
                extra["provision"] = list(grants)
        roles = RoleSet.from_roles(raw, identity.traits, identity.allowed_resources)
        context = self._context(identity, client_addr)
        decision = roles.check_db_access(
            db.all_labels(),
            db_user,
            db_name,
            db_service=db.metadata.name,
            context=context,
        )
        if not decision.allowed:
            shown = f' (db name "{db_name}")' if db_name is not None else ""
            raise _Refused(
                f'access to database "{db.metadata.name}" as db user "{db_user}"{shown} denied',
                decision.reason,
            )
        required = db_mfa_required(
            raw, identity.traits, db.all_labels(), db_user, db_name, db_service=db.metadata.name,
            context=context,
            cluster_requires_mfa=deps.locks.cluster_session_mfa if deps.locks else False,
        )  # fmt: skip
        mfa = check_db_session_mfa(
            identity, db_service=db.metadata.name, db_user=db_user, required=required
        )
        if mfa is not None:  # per-session MFA (docs/database-access.md)
            raise _Refused(mfa.message, mfa.reason)
        moderated = policy_sets(
            ((r.name, r.options.require_session_join) for r in roles.roles), "db"
        )
        if moderated and deps.moderation is None:  # nobody could join: fail closed
            raise _Refused(
                f'database sessions of role "{moderated[0].role}" must be moderated '
                "(require_session_join); moderated database sessions are not available yet",
                "moderation required for db sessions",
            )
        if deps.locks is not None:
            targets = identity_targets(identity, login=db_user, nodes=(db.metadata.name,))
            mode = effective_mode(roles.options().lock_mode, deps.locks.cluster_mode)
            deps.locks.check(targets, mode).raise_if_denied()
        return roles

    async def _run(
        self,
        relay: Relay,
        side: _QuerySide,
        transport: asyncio.Transport,
        identity: Identity,
        info: dict[str, str],
        remote: str,
        goodbye: Callable[[str], bytes],
    ) -> None:
        deps = self._deps
        if deps.moderation is not None:
            transport.pause_reading()  # nothing reaches the database until moderation says so

        async def terminate(reason: str) -> None:
            if not transport.is_closing():
                # Between two server messages in practice; the connection ends either way.
                transport.write(goodbye(reason))
            relay.terminate(reason)

        moderated = None  # require_session_join for db (docs/moderated-sessions.md)
        if deps.moderation is not None:
            try:
                moderated = await deps.moderation.open(identity, info, remote, terminate)
            finally:  # PostgreSQL: a held client is told who must join (NoticeResponse)
                if isinstance(relay.b, _KeyTap):
                    relay.b.release(moderated.pg_notice() if moderated is not None else b"")
            if moderated is None:
                transport.resume_reading()

        live = deps.registry.add(
            LiveConnection(
                kind="db",
                identity=identity,
                target=info["db_service"],
                login=info["db_user"],
                remote_addr=remote,
                started=deps.clock.now(),
                terminate=terminate,
                extra={"db_name": info["db_name"]},
            )
        )
        session_id = str(uuid.uuid4())
        protocol = "mysql" if isinstance(side, _MySQLClientSide) else "postgres"
        recording = self._open_recording(session_id, identity, info, protocol)
        await deps.audit.emit(
            "db.session.start", user=identity.user, remote_addr=remote, reason="",
            session_id=session_id, **info,
        )  # fmt: skip
        watch = moderated.on_statement if moderated is not None else None
        pump = self._tasks.spawn(
            self._audit_queries(side, identity, info, session_id, watch, recording),
            "db-query-audit",
        )
        try:
            if moderated is not None:
                await moderated.admit(transport, relay.wait_closed())
            await relay.wait_closed()
        finally:
            deps.registry.remove(live)
            side.ended = True
            side.pending.set()
            # Every statement is committed before the end event (the writer drains first).
            await _drained(pump, side)
            unaudited = _unaudited(side.statements)
            if not pump.done():
                log.error("db audit writer stuck: %d statements not audited", unaudited)
                pump.cancel()
            if moderated is not None:  # after the last statements went out to the moderators
                info["participants"] = ",".join(await moderated.end())
            recorded = await recording.finish(deps.clock.now()) if recording is not None else None
            await deps.audit.emit(
                "db.session.end",
                user=identity.user,
                remote_addr=remote,
                bytes_in=relay.bytes_a_to_b,
                bytes_out=relay.bytes_b_to_a,
                unaudited_queries=unaudited,
                reason=relay.reason,
                session_id=session_id,
                **({"recording_sha256": recorded.sha256} if recorded is not None else {}),
                **info,
            )
            if recorded is not None and deps.recordings is not None and recording is not None:
                # After the end event (auth checks the hash).
                deps.recordings.notify(recorded, recording.held)

    def _open_recording(
        self, session_id: str, identity: Identity, info: dict[str, str], protocol: str
    ) -> _Recording | None:
        """The session's recording (None: recordings off). Its files are created in the spool
        by the session's audit writer, off the event loop (:meth:`_Recording.open`)."""
        uploader = self._deps.recordings
        if uploader is None:
            return None
        if self._uploading is None or self._uploading.done():
            self._uploading = self._tasks.spawn(uploader.run(), "db-recording-upload")
        now = self._deps.clock.now()
        meta = RecordingMeta(
            session_id=session_id,
            user=identity.user,
            login=info["db_user"],
            node=info["db_service"],
            kind="db",
            command=info["db_name"],
            started=now,
        )
        header = DbCastHeader(
            user=identity.user,
            db_service=info["db_service"],
            db_user=info["db_user"],
            db_name=info["db_name"],
            protocol=protocol,
            timestamp=int(now.timestamp()),
        )
        return _Recording(uploader, meta, DbCastBuilder(header), self._deps.clock)

    async def _audit_queries(
        self,
        side: _QuerySide,
        identity: Identity,
        info: dict[str, str],
        session_id: str,
        watch: Callable[[str], None] | None = None,
        recording: _Recording | None = None,
    ) -> None:
        """The session's audit writer: commits its statements in batches (every
        ``_FLUSH_INTERVAL`` or ``_MAX_BATCH`` statements, one transaction each), in order,
        and drains them all once the session ended. Each statement is also written to the
        session's recording once audited. The writers of all sessions wake on one shared tick,
        so the audit log's group commit stores their batches together (a few transactions
        per tick, not one per session)."""
        # One transaction per batch; what the session's events share is encoded once.
        shared = {"user": identity.user, "session_id": session_id, **info}
        writer = SessionEvents(self._deps.audit, "db.session.query", shared)
        copied = {
            outcome: SessionEvents(self._deps.audit, "db.session.copy", shared, outcome)
            for outcome in ("success", "failure")
        }
        statements = side.statements
        while True:
            if not statements:
                if side.ended:
                    return
                side.pending.clear()
                await side.pending.wait()
                continue
            if len(statements) < _MAX_BATCH and not side.bulk_bytes and not side.ended:
                await self._tick.wait()  # let a few more arrive (a bulk execute has them)
            batch, side.bulk_bytes = _take_batch(statements, side.bulk_bytes)
            side.audited()
            if watch is not None:  # a moderated session: its moderators see it live
                for statement in batch:
                    watch(statement.sql)
            if not self._deps.audit_queries:
                side.stored += len(batch)  # taken is as far as they go
                if recording is not None:
                    await recording.write(batch)
                continue
            stored = 0
            try:
                for run in _runs(batch) if side.copies else (batch,):
                    if isinstance(run[0], CopyReport):
                        events = copied[run[0].outcome]
                        owns = [c.fields() for c in run if isinstance(c, CopyReport)]
                    else:
                        events = writer
                        owns = [_query_fields(s) for s in run if not isinstance(s, CopyReport)]
                    await events.append(owns)
                    stored += len(run)
                    side.stored += len(run)
            except (BastionError, OSError) as exc:
                # Not stored: keep them first in line and try again (the client waits once
                # the high-water mark is reached; nothing is dropped).
                stored += events.stored
                side.stored += events.stored
                statements.extendleft(reversed(batch[stored:]))
                if recording is not None:
                    await recording.write(batch[:stored])
                log.warning("db query audit failed; retrying: %s", exc)
                await asyncio.sleep(1.0)
            else:
                if recording is not None:
                    await recording.write(batch)

    async def close(self) -> None:
        await self._tasks.cancel_all(timeout=5)


class _Ticker:
    """A tick every ``interval`` seconds while someone waits for it, shared by its waiters."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Until the next tick (at most ``interval`` seconds)."""
        tick = self._next
        if tick is None or tick.done():
            loop = asyncio.get_running_loop()
            tick = self._next = loop.create_future()
            loop.call_later(self._interval, _fire, tick)
        await asyncio.shield(tick)  # a cancelled waiter leaves the tick to the others


def _fire(tick: asyncio.Future[None]) -> None:
    if not tick.done():
        tick.set_result(None)


def _gated(identity: Identity) -> Identity:
    """What the gate checks (user, epoch, locks): a database per-session MFA certificate is
    checked like its login certificate there; its scope is checked by
    :func:`~bastion.rbac.db_session_mfa.check_db_session_mfa` (any other scope stays refused)."""
    if identity.mfa_scope.startswith(DB_SCOPE_PREFIX):
        return identity.model_copy(update={"mfa_scope": ""})
    return identity


class _Recording:
    """One session's recording: :mod:`bastion.recording.dbcast` lines, kept in memory and
    appended to a spool file at most every :data:`_RECORDING_FLUSH` seconds (or per
    :data:`_RECORDING_BUFFER` bytes) and at the end: one thread hop per second per session, not
    one per batch (a hop costs the loop a GIL hand-over). A process killed mid-session loses at
    most that second of the recording; the statements are in the audit log all the same.

    The spool file is made at the first such append, so a session shorter than that never has
    one: its recording is handed to the uploader in memory (:meth:`Uploader.can_hold`), which
    stores it without a file of its own (creating, renaming and removing the spool's files cost
    a short connection ~4 ms of kernel time). File operations (create with its durable metadata,
    append, fsync, finish) run in a worker thread, one at a time (the session's audit writer
    awaits each), so an fsync never stalls the event loop."""

    def __init__(
        self, uploader: Uploader, meta: RecordingMeta, builder: DbCastBuilder, clock: Clock
    ) -> None:
        self._uploader = uploader
        self._meta = meta
        self._builder = builder
        self._clock = clock
        self._start = clock.monotonic()
        self._file: SpoolFile | None = None
        self._failed = False
        self._buffer: list[bytes] = [builder.start()]
        self._buffered = len(self._buffer[0])
        self._flushed = self._start
        self.held: bytes | None = None
        """The finished recording's bytes when :meth:`finish` kept it in memory (for
        :meth:`Uploader.notify`): it has no spool file."""

    def _open(self, data: bytes) -> SpoolFile:
        """Create the files and write what was buffered (one thread hop)."""
        file = self._uploader.spool.open(self._meta)
        self._file = file
        self._write(data)
        return file

    def _write(self, data: bytes) -> None:
        if self._file is None or self._failed:
            return
        try:
            self._file.write(data)
        except OSError as exc:  # the session goes on (audited); the recording is cut short
            log.error("db recording %s: write failed: %s", self._meta.session_id, exc)

    async def write(self, statements: Sequence[Statement | CopyReport]) -> None:
        if not statements or self._failed:
            return
        now = self._clock.monotonic()
        seconds = now - self._start
        line = self._builder.statement
        data = b"".join(line(seconds, s.sql, s.params) for s in statements)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _RECORDING_BUFFER or now - self._flushed >= _RECORDING_FLUSH:
            await self._flush(now)

    async def _flush(self, now: float) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer, self._buffered = [], 0
            if self._file is None:
                try:
                    await asyncio.to_thread(self._open, data)
                except OSError as exc:
                    log.error("db session %s: cannot start its recording: %s",
                              self._meta.session_id, exc)  # fmt: skip
                    self._failed = True
            else:
                await asyncio.to_thread(self._write, data)
        self._flushed = now

    async def finish(self, ended: datetime) -> RecordingMeta | None:
        """Close it and mark it ready for upload; its metadata with the sha256 (None: the
        spool failed, nothing to upload). A recording that never reached the spool stays in
        memory (:attr:`held`) when the uploader can hold it."""
        if self._failed:
            return None
        rest = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        file = self._file
        if file is None:
            meta = self._meta.model_copy(
                update={"ended": ended, "size": len(rest), "sha256": sha256(rest).hexdigest()}
            )
            if self._uploader.can_hold(len(rest)):
                self.held = rest
                return meta
            return await asyncio.to_thread(self._spool, meta, rest)
        return await asyncio.to_thread(self._finish, file, ended, rest)

    def _spool(self, meta: RecordingMeta, data: bytes) -> RecordingMeta | None:
        """Spool a short recording the uploader cannot hold (one thread hop)."""
        try:
            self._uploader.spool.save(meta, data)
        except OSError as exc:
            log.error("db recording %s: cannot spool it: %s", meta.session_id, exc)
            return None
        return meta

    def _finish(self, file: SpoolFile, ended: datetime, rest: bytes) -> RecordingMeta | None:
        """Append the last lines, close and mark ready (one thread hop)."""
        self._write(rest)
        try:
            return file.finish(file.meta.model_copy(update={"ended": ended}))
        except OSError as exc:
            log.error("db recording %s: cannot finish: %s", file.meta.session_id, exc)
            file.abort()
            return None


def _query_fields(s: Statement) -> dict[str, object]:
    """A ``db.session.query`` event's own fields."""
    own: dict[str, object] = {"query": s.sql, "parameters": list(s.params), "protocol": s.protocol}
    types = getattr(s, "param_types", ())  # MySQL's prepared statements
    if types:
        own["parameter_types"] = list(types)
    return own


async def _drained(
    pump: asyncio.Future[None],
    side: _QuerySide,
    wait: Callable[..., Awaitable[object]] = asyncio.wait,
) -> None:
    """Until the audit writer ``pump`` is done, or made no progress for ``_WRITER_STALL``
    seconds (a bulk execute's rows may take minutes to store: they are waited for)."""
    while not pump.done():
        stored = side.stored
        await wait({pump}, timeout=_WRITER_STALL)
        if side.stored == stored:
            return


def _unaudited(pending: deque[Statement | CopyReport | mysql.BulkExecute]) -> int:
    """The statements and reports in ``pending`` (a bulk execute's rows counted)."""
    return sum(i.rows_left() if isinstance(i, mysql.BulkExecute) else 1 for i in pending)


def _take_batch(
    pending: deque[Statement | CopyReport | mysql.BulkExecute], bulk_bytes: int
) -> tuple[list[Statement | CopyReport], int]:
    """Up to ``_MAX_BATCH`` statements and reports from the front of ``pending``, in order: a
    bulk execute gives its rows as they are taken (the rest stay first in line), so one packet
    of a million rows is never a million statements in memory. Also ``bulk_bytes`` less the
    bulk executes taken whole."""
    batch: list[Statement | CopyReport] = []
    while pending and len(batch) < _MAX_BATCH:
        item = pending[0]
        if isinstance(item, mysql.BulkExecute):
            batch.extend(item.take(_MAX_BATCH - len(batch)))
            if not item.done:
                break
            bulk_bytes -= len(item.body)
        else:
            batch.append(item)
        pending.popleft()
    return batch, bulk_bytes


def _runs(batch: list[Statement | CopyReport]) -> list[list[Statement | CopyReport]]:
    """``batch`` cut into runs of one event type and outcome, in order (one append each)."""
    runs: list[list[Statement | CopyReport]] = []
    last = ""
    for item in batch:
        kind = item.outcome if isinstance(item, CopyReport) else "query"
        if kind != last:
            runs.append([])
            last = kind
        runs[-1].append(item)
    return runs


def _refusal(exc: BaseException) -> tuple[str, str]:
    """(message for the client, reason for audit)."""
    if isinstance(exc, _Refused):
        return exc.message, exc.reason
    if isinstance(exc, RemoteProtocolError):
        return f"protocol violation: {exc.message}", exc.message
    if isinstance(exc, BastionError):
        return exc.message, getattr(exc, "reason", "") or exc.message
    if isinstance(exc, TimeoutError):
        return "timed out", "timed out waiting for the startup message or the database agent"
    return "connection failed", f"{type(exc).__name__}: {exc}"
