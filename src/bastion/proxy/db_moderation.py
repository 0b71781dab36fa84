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
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bastion.audit.emitter import Emitter
from bastion.clock import Clock
from bastion.live.moderated import ModeratedSession, RoleSource, TrackerReporter, serve_join
from bastion.protocols.postgres import build_message
from bastion.protocols.sessionjoin import DB_SESSIONS_HOST
from bastion.rbac.moderation import PolicySet
from bastion.rbac.moderation import policy_sets as _policy_sets
from bastion.tasks import TaskSet
from bastion.tunnel.memory import memory_pair
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.sessions import SessionKind

__all__ = [
    "DB_SESSIONS_HOST",
    "DbModerationHub",
    "ModeratedDb",
    "ReadyHold",
    "db_policy_sets",
    "notice_response",
    "waiting_message",
]


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


@dataclass(eq=False, kw_only=True)
class ModeratedDb(ModeratedSession):
    """One moderated database session: the hold of its client and the statement fan-out."""

    kind: ClassVar[SessionKind] = "db"
    pause_text: ClassVar[str] = "session paused: statements are held until a moderator joins"

    hub: DbModerationHub
    info: Mapping[str, str]
    """``db_service``, ``db_user``, ``db_name`` of the session."""
    remote: str
    _client: asyncio.Transport | None = None

    async def admit(self, client: asyncio.Transport, closed: Awaitable[None]) -> bool:
        """Hold the client (read nothing) until the policies are met; False when the session
        ended first (the client left, a lock, a moderator's terminate)."""
        self._client = client
        self.start_tracking()
        if not self.waiting_for():
            self.state = "running"
            return True
        client.pause_reading()
        waiter = asyncio.ensure_future(self.wait_until_ready())
        gone = asyncio.ensure_future(closed)
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not gone.done():
                gone.cancel()
        if self.ended or self.state != "running":
            return False
        client.resume_reading()
        return True

    def pg_notice(self) -> bytes:
        """The NoticeResponse a held PostgreSQL client gets (``b""`` when not held).
        MySQL has no message a client shows before the handshake's OK packet (warnings
        are only counted there), so a held MySQL client just waits."""
        waiting = self.waiting_for()
        return notice_response(waiting_message(self.session_id, waiting)) if waiting else b""

    def on_statement(self, sql: str) -> None:
        """A statement of the session (as audited): shown to every participant."""
        info = self.info
        self.broadcast(f"{info.get('db_user', '')}@{info.get('db_name', '')}=> {sql}\r\n".encode())

    async def end(self, reason: str = "the session ended") -> list[str]:
        """The session is over: tell and drop every participant; returns all participants."""
        self.hub.sessions.pop(self.session_id, None)
        await self.finish(reason, forget=False)
        if self.reporter is not None:  # gone from bsh sessions ls when the session is
            await self._call(self.reporter.forget(self.session_id))
        return [self.owner, *self.participants]

    # -- hooks of ModeratedSession -------------------------------------------------------------

    def _joined_text(self, mode: str) -> str:
        db = self.info.get("db_service", "")
        return f"joined {self.owner}'s database session on {db} as {mode}"

    def _on_resume(self) -> None:
        if self._client is not None:
            self._client.resume_reading()

    def _on_pause(self) -> None:
        if self._client is not None:
            self._client.pause_reading()

    def _tracker_fields(self) -> dict[str, Any]:
        return {
            "kind": "db",
            "node": self.info.get("db_service", ""),
            "host_id": DB_SESSIONS_HOST,
            "login": self.info.get("db_user", ""),
            "command": self.info.get("db_name", ""),
        }


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
            session_id=str(uuid.uuid4()),
            owner=identity.user,
            owner_roles=tuple(identity.roles),
            sets=sets,
            started=self.clock.now(),
            clock=self.clock,
            tasks=self.tasks,
            audit=self.audit,
            reporter=self.reporter,
            audit_fields={
                "login": info.get("db_user", ""),
                "target": info.get("db_service", ""),
                "kind": "db",
            },
            terminate=terminate,
            hub=self,
            info=dict(info),
            remote=remote,
        )
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
        await serve_join(self.sessions, self.roles, transport, header)

    async def close(self) -> None:
        await self.tasks.cancel_all(timeout=5)
