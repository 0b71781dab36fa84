"""Moderated database sessions in the proxy: ``require_session_join`` with ``kinds: [db]``.

Layer: ``proxy`` (IO shell around the pure :mod:`bastion.rbac.moderation`), used by
:mod:`bastion.proxy.db_route` for every protocol (PostgreSQL, MySQL). The proxy is where a
database session's statements are parsed, so it is where a moderator watches them:

* When the owner's roles carry policies for ``db``, the session is **held**: the client's
  connection is open but the proxy reads nothing from it (no statement reaches the database)
  until :func:`~bastion.rbac.moderation.fulfilment` holds. The session's tracker says who must
  join (``bsh sessions ls``).
* ``bsh join ID --mode=moderator`` (or observer) reaches the proxy's SSH route with the node
  :data:`~bastion.protocols.sessionjoin.DB_SESSIONS_HOST`; the route hands the stream to
  :meth:`DbModerationHub.connect` instead of a node's tunnel. Frames are those of
  :mod:`bastion.protocols.sessionjoin`: each statement goes out as output (``db_user@db=> SQL``);
  a moderator's terminate frame ends the session; nobody types into a database session.
* When a leave breaks the policies: ``terminate`` ends the session, ``pause`` holds the client
  again until enough moderators are back.

Joins and leaves are audited (``session.join``/``session.leave``, kind ``db``). Trackers are
reported with :data:`DB_SESSIONS_HOST` as their host id; without a reporter (a proxy in its own
process) moderated database sessions are refused by the route (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bastion.audit.emitter import Emitter
from bastion.clock import Clock
from bastion.errors import AccessDenied, BastionError
from bastion.protocols.postgres import build_message
from bastion.protocols.sessionjoin import (
    DB_SESSIONS_HOST,
    FrameDecoder,
    FrameType,
    encode_frame,
)
from bastion.rbac.moderation import Participant, PolicySet, check_join, fulfilment, leave_action
from bastion.rbac.moderation import policy_sets as _policy_sets
from bastion.tasks import TaskSet
from bastion.tunnel.memory import memory_pair
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.types.sessions import (
    JOIN_MODES,
    JoinMode,
    SessionParticipant,
    SessionState,
    SessionTracker,
    SessionTrackerSpec,
)

__all__ = [
    "DB_SESSIONS_HOST",
    "DbModerationHub",
    "ModeratedDb",
    "ReadyHold",
    "db_policy_sets",
    "notice_response",
    "waiting_message",
]

log = structlog.get_logger(__name__)
TRACKER_TTL = timedelta(minutes=3)
TRACKER_REFRESH = 60.0
MAX_JOINER_BUFFER = 4 * 1024 * 1024


def db_policy_sets(roles: Sequence[Role]) -> tuple[PolicySet, ...]:
    """The owner's ``require_session_join`` policies that apply to database sessions."""
    return _policy_sets(
        ((r.metadata.name, r.spec.options.require_session_join) for r in roles), "db"
    )


def waiting_message(session_id: str, waiting_for: Sequence[str]) -> str:
    """What a held session's client is told: who must join, and the command to do it."""
    return (
        f"this session waits for moderators to join ({'; '.join(waiting_for)}): "
        f"bsh join {session_id} --mode=moderator"
    )


def notice_response(message: str) -> bytes:
    """A PostgreSQL NoticeResponse (``N``, severity NOTICE, SQLSTATE 00000): ``psql`` prints
    ``NOTICE:  <message>`` on stderr."""
    fields = [(b"S", "NOTICE"), (b"V", "NOTICE"), (b"C", "00000"), (b"M", message)]
    body = b"".join(k + v.replace("\x00", "").encode() + b"\x00" for k, v in fields) + b"\x00"
    return build_message(b"N", body)


class ReadyHold:
    """The database's side of a PostgreSQL session on a proxy that moderates: places a notice
    just before the server's first ReadyForQuery (``Z``).

    The startup answer (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery) is
    already flowing when the proxy learns whether the session is held, so complete messages
    pass, and from the first ``Z`` on the bytes are kept until :meth:`release` says which
    notice (maybe none) goes before it. libpq takes a NoticeResponse after authentication
    (its default notice processor prints it on stderr, before ``psql`` shows a prompt); it
    refuses one before AuthenticationOk, so nothing is placed earlier. An ErrorResponse,
    a malformed frame or 64 KiB without ``Z`` ends the watch (everything passes; the notice
    is dropped)."""

    _LIMIT = 64 * 1024

    def __init__(self) -> None:
        self._buf = bytearray()
        self._seen = 0
        self._notice: bytes | None = None
        self._at_ready = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """What to relay now of ``data`` (the rest is kept)."""
        if self.done:
            return data
        self._buf += data
        if self._at_ready:
            return b""
        self._seen += len(data)
        buf, pos = self._buf, 0
        while len(buf) - pos >= 5:
            kind = buf[pos]
            length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if length < 4 or kind == ord("E"):
                return self._pass_all()
            if kind == ord("Z"):
                if self._notice is None:
                    self._at_ready = True
                    out = bytes(buf[:pos])
                    del buf[:pos]
                    return out
                return self._pass_all(pos, self._notice)
            if pos + 1 + length > len(buf):
                break
            pos += 1 + length
        if self._seen > self._LIMIT:
            return self._pass_all()
        out = bytes(buf[:pos])
        del buf[:pos]
        return out

    def release(self, notice: bytes) -> bytes:
        """Decide the notice (``b""``: none); returns what to relay now."""
        if self.done:
            return b""
        if not self._at_ready:
            self._notice = notice
            return b""
        return self._pass_all(0, notice)

    def _pass_all(self, at: int = 0, notice: bytes = b"") -> bytes:
        out = bytes(self._buf[:at]) + notice + bytes(self._buf[at:])
        self._buf = bytearray()
        self.done = True
        return out


class TrackerReporter(Protocol):
    async def report(self, tracker: SessionTracker) -> None: ...

    async def forget(self, session_id: str) -> None: ...


class RoleSource(Protocol):
    async def get_roles(self, names: Sequence[str]) -> list[Role]: ...


@dataclass(eq=False)
class _Joiner:
    user: str
    mode: JoinMode
    roles: tuple[str, ...]
    traits: Mapping[str, Sequence[str]]
    remote: str
    transport: asyncio.Transport
    joined: datetime
    gone: bool = False

    def send(self, kind: FrameType, payload: bytes = b"") -> None:
        if not self.gone and not self.transport.is_closing():
            self.transport.write(encode_frame(kind, payload))


@dataclass(eq=False)
class ModeratedDb:
    """One moderated database session: participants, the hold, the statement fan-out."""

    hub: DbModerationHub
    session_id: str
    owner: Identity
    sets: tuple[PolicySet, ...]
    info: Mapping[str, str]
    """``db_service``, ``db_user``, ``db_name`` of the session."""
    remote: str
    terminate: Callable[[str], Awaitable[None]]
    started: datetime
    joiners: list[_Joiner] = field(default_factory=list)
    state: SessionState = "pending"
    participants: list[str] = field(default_factory=list)
    _client: asyncio.Transport | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: bool = False
    _refresher: asyncio.Task[None] | None = None

    def _present(self) -> list[Participant]:
        return [Participant(j.user, j.mode, j.roles, j.traits) for j in self.joiners if not j.gone]

    async def admit(self, client: asyncio.Transport, closed: Awaitable[None]) -> bool:
        """Hold the client (read nothing) until the policies are met; False when the session
        ended first (the client left, a lock, a moderator's terminate)."""
        self._client = client
        self._report()
        self._refresher = self.hub.tasks.spawn(self._refresh(), f"db-tracker-{self.session_id}")
        if fulfilment(self.sets, self._present(), self.owner.user).met:
            self.state = "running"
            return True
        client.pause_reading()
        waiter = asyncio.ensure_future(self._ready.wait())
        gone = asyncio.ensure_future(closed)
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not gone.done():
                gone.cancel()
        if self._ended or not self._ready.is_set():
            return False
        client.resume_reading()
        return True

    def waiting_for(self) -> tuple[str, ...]:
        """Who must still join before the session runs (empty: nobody, it runs)."""
        return fulfilment(self.sets, self._present(), self.owner.user).waiting_for

    def pg_notice(self) -> bytes:
        """The NoticeResponse a held PostgreSQL client gets (``b""`` when not held).
        MySQL has no message a client shows before the handshake's OK packet (warnings
        are only counted there), so a held MySQL client just waits."""
        waiting = self.waiting_for()
        return notice_response(waiting_message(self.session_id, waiting)) if waiting else b""

    def on_statement(self, sql: str) -> None:
        """A statement of the session (as audited): shown to every participant."""
        info = self.info
        line = f"{info.get('db_user', '')}@{info.get('db_name', '')}=> {sql}\r\n".encode()
        for joiner in list(self.joiners):
            if joiner.transport.get_write_buffer_size() > MAX_JOINER_BUFFER:
                self.hub.tasks.spawn(self.detach(joiner, "too slow"), "db-join-drop")
                continue
            joiner.send("o", line)

    async def attach(
        self,
        identity: Identity,
        roles: Sequence[Role],
        mode: JoinMode,
        transport: asyncio.Transport,
        remote: str,
    ) -> _Joiner:
        """Raises: AccessDenied when the joiner may not join in ``mode`` (audited)."""
        owner = self.owner
        decision = check_join(identity.user, roles, owner.user, list(owner.roles), "db", mode)
        if not decision.allowed or self._ended:
            reason = decision.reason if not decision.allowed else "the session is ending"
            await self._audit("session.join", identity.user, mode, remote, "failure", reason)
            raise AccessDenied(decision.reason)
        joiner = _Joiner(
            identity.user, mode, tuple(identity.roles), identity.traits, remote, transport,
            self.hub.clock.now(),
        )  # fmt: skip
        self.joiners.append(joiner)
        if identity.user not in self.participants:
            self.participants.append(identity.user)
        await self._audit("session.join", identity.user, mode, remote)
        self._announce(f"{identity.user} joined as {mode}", skip=joiner)
        db = self.info.get("db_service", "")
        joiner.send("n", f"joined {owner.user}'s database session on {db} as {mode}".encode())
        if self.state != "running" and fulfilment(self.sets, self._present(), owner.user).met:
            was, self.state = self.state, "running"
            if was == "paused" and self._client is not None:
                self._client.resume_reading()
                self._announce("session resumed")
            self._ready.set()
        self._report()
        return joiner

    async def detach(self, joiner: _Joiner, reason: str = "left") -> None:
        if joiner.gone:
            return
        joiner.gone = True
        with contextlib.suppress(ValueError):
            self.joiners.remove(joiner)
        with contextlib.suppress(Exception):
            joiner.transport.close()
        await self._audit("session.leave", joiner.user, joiner.mode, joiner.remote, reason=reason)
        if self._ended:
            return
        self._announce(f"{joiner.user} ({joiner.mode}) left")
        if self.state == "running":
            action = leave_action(self.sets, self._present(), self.owner.user)
            if action == "terminate":
                await self._end_by(f"moderator {joiner.user} left the moderated session")
                return
            if action == "pause":
                self.state = "paused"
                if self._client is not None:
                    self._client.pause_reading()
                self._announce("session paused: statements are held until a moderator joins")
        self._report()

    async def moderator_terminate(self, joiner: _Joiner) -> None:
        if joiner.mode != "moderator" or self._ended:
            joiner.send("n", b"only a moderator can terminate the session")
            return
        await self._end_by(f"terminated by moderator {joiner.user}")

    async def _end_by(self, reason: str) -> None:
        self._ended = True
        self._ready.set()
        await self.terminate(reason)

    async def end(self, reason: str = "the session ended") -> list[str]:
        """The session is over: tell and drop every participant; returns all participants."""
        self._ended = True
        self._ready.set()
        self.hub.sessions.pop(self.session_id, None)
        if self._refresher is not None:
            self._refresher.cancel()
        for joiner in list(self.joiners):
            joiner.send("e", reason.encode())
            await self.detach(joiner, reason)
        reporter = self.hub.reporter
        if reporter is not None:
            await self._call(reporter.forget(self.session_id))
        return [self.owner.user, *self.participants]

    def _announce(self, text: str, skip: _Joiner | None = None) -> None:
        for joiner in list(self.joiners):
            if joiner is not skip:
                joiner.send("n", text.encode())

    async def _audit(
        self, event: str, user: str, mode: str, remote: str, outcome: str = "success",
        reason: str = "",
    ) -> None:  # fmt: skip
        await self.hub.audit.emit(
            event,
            outcome=outcome,
            user=user,
            login=self.info.get("db_user", ""),
            target=self.info.get("db_service", ""),
            remote_addr=remote,
            session_id=self.session_id,
            participant=user,
            mode=mode,
            owner=self.owner.user,
            kind="db",
            reason=reason,
        )

    def tracker(self) -> SessionTracker:
        waiting = () if self.state == "running" else fulfilment(
            self.sets, self._present(), self.owner.user
        ).waiting_for  # fmt: skip
        parts = [SessionParticipant(user=self.owner.user, mode="owner", joined=self.started)]
        parts += [SessionParticipant(user=j.user, mode=j.mode, joined=j.joined)
                  for j in self.joiners if not j.gone]  # fmt: skip
        return SessionTracker(
            metadata=Metadata(name=self.session_id, expires=self.hub.clock.now() + TRACKER_TTL),
            spec=SessionTrackerSpec(
                kind="db",
                node=self.info.get("db_service", ""),
                host_id=DB_SESSIONS_HOST,
                owner=self.owner.user,
                owner_roles=list(self.owner.roles),
                login=self.info.get("db_user", ""),
                command=self.info.get("db_name", ""),
                state=self.state,
                participants=parts,
                waiting_for=list(waiting),
                started=self.started,
            ),
        )

    def _report(self) -> None:
        reporter = self.hub.reporter
        if reporter is not None and not self._ended:
            self.hub.tasks.spawn(self._call(reporter.report(self.tracker())), "db-tracker")

    async def _call(self, call: Awaitable[None]) -> None:
        try:
            await call
        except (BastionError, OSError) as exc:
            log.warning("db session tracker not reported", session_id=self.session_id,
                        error=str(exc))  # fmt: skip

    async def _refresh(self) -> None:
        while not self._ended:
            await asyncio.sleep(TRACKER_REFRESH)
            self._report()


class _JoinProtocol(asyncio.Protocol):
    """A participant's stream: terminate frames (input is never delivered to a database)."""

    def __init__(self, session: ModeratedDb) -> None:
        self.session = session
        self.joiner: _Joiner | None = None
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except BastionError:
            self._leave("protocol error")
            return
        for frame in frames:
            if frame.type == "t" and self.joiner is not None:
                self.session.hub.tasks.spawn(
                    self.session.moderator_terminate(self.joiner), "db-join-terminate"
                )

    def eof_received(self) -> bool:
        self._leave("left")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave("left")

    def _leave(self, reason: str) -> None:
        if self.joiner is not None and not self.joiner.gone:
            self.session.hub.tasks.spawn(self.session.detach(self.joiner, reason), "db-join-leave")


class DbModerationHub:
    """The proxy's moderated database sessions by id, and the door for joining them."""

    def __init__(
        self, roles: RoleSource, audit: Emitter, clock: Clock, reporter: TrackerReporter
    ) -> None:
        self.roles = roles
        self.audit = audit
        self.clock = clock
        self.reporter: TrackerReporter | None = reporter
        self.tasks = TaskSet()
        self.sessions: dict[str, ModeratedDb] = {}

    async def open(
        self,
        identity: Identity,
        info: Mapping[str, str],
        remote: str,
        terminate: Callable[[str], Awaitable[None]],
    ) -> ModeratedDb | None:
        """A moderated session for this connection, or None when no policy applies."""
        sets = db_policy_sets(await self.roles.get_roles(identity.roles))
        if not sets:
            return None
        session = ModeratedDb(
            self, str(uuid.uuid4()), identity, sets, dict(info), remote, terminate,
            self.clock.now(),
        )  # fmt: skip
        self.sessions[session.session_id] = session
        return session

    def connect(self, header: Mapping[str, Any], protocol_factory: Callable[[], Any]) -> None:
        """Serve a join stream from the SSH route in process (as a tunnel dial would)."""
        near, far = memory_pair("db session join")
        protocol = protocol_factory()
        near.set_protocol(protocol)
        protocol.connection_made(near)
        self.tasks.spawn(self.accept_join(far, header), "db-session-join")

    async def accept_join(self, transport: asyncio.Transport, header: Mapping[str, Any]) -> None:
        """One join stream (header of :func:`bastion.proxy.join_route.join_header`)."""
        session_id = str(header.get("session_id", ""))
        mode = str(header.get("mode", ""))
        remote = str(header.get("client_addr", ""))
        session = self.sessions.get(session_id)
        try:
            identity = Identity.decode(str(header.get("identity", "")))
            if session is None or mode not in JOIN_MODES:
                raise AccessDenied(f"session {session_id} not found")
            protocol = _JoinProtocol(session)
            transport.set_protocol(protocol)
            roles = await self.roles.get_roles(identity.roles)
            joined = next(m for m in JOIN_MODES if m == mode)
            protocol.joiner = await session.attach(identity, roles, joined, transport, remote)
        except (ValueError, BastionError) as exc:
            log.info("db session join refused", session_id=session_id, reason=str(exc))
            transport.write(encode_frame("e", f"session {session_id} not found".encode()))
            transport.close()

    async def close(self) -> None:
        await self.tasks.cancel_all(timeout=5)
