"""Live session join and moderated sessions on the node (issue 17 parts 4 and 5).

Layer: agent IO shell around the pure :mod:`bastion.rbac.moderation`. Every SSH session (shell
or exec) on the node is *shared*: a :class:`SharedSession` is one of its
:class:`~bastion.agent.session.SessionObserver` objects, so it sees the output exactly as the
owner's terminal does, and the node's :class:`SessionHub` finds it by session id.

How a participant joins: ``bsh join`` sends the route line with ``"join"`` to the proxy, which
authenticates the user, passes the gate and opens a ``session_join`` stream on this node's
reverse tunnel with the verified identity (:mod:`bastion.proxy.join_route`). The hub reads the
joiner's current roles and decides with :func:`~bastion.rbac.moderation.check_join`; a refusal
looks like a session that does not exist. Then frames (:mod:`bastion.protocols.sessionjoin`) flow:
output to every participant; input only from peers (observers and moderators cannot type); a
moderator's terminate frame ends the session.

Moderation: when the owner's roles carry ``require_session_join`` policies for ``ssh``, the
session waits (the owner is told who must join) until :func:`~bastion.rbac.moderation.
fulfilment` holds; input typed while waiting is dropped. When a leave breaks the policies, the
session pauses (nobody's input reaches it until enough moderators are back) or terminates, per
``on_leave``. Joins and leaves are audited (``session.join``/``session.leave``); every
participant is listed in ``session.end``; those present when the session starts are in the
recording's header.

The node reports each shared session to auth as a :class:`~bastion.types.sessions.
SessionTracker` (refreshed while it lives, removed at its end) so ``bsh sessions ls`` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bastion.agent.deps import NodeDeps
from bastion.agent.remote import RemoteAuth
from bastion.agent.session import SessionMeta
from bastion.agent.ssh_auth import Authorized
from bastion.contract.base import Empty
from bastion.contract.sessions import FORGET_SESSION, REPORT_SESSION, TrackerBody
from bastion.errors import AccessDenied, BastionError
from bastion.protocols.sessionjoin import FrameDecoder, FrameType, encode_frame
from bastion.rbac.moderation import (
    Participant,
    check_join,
    fulfilment,
    leave_action,
    policy_sets,
)
from bastion.tasks import TaskSet
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

__all__ = ["APITrackers", "SessionHub", "SharedSession", "TrackerReporter"]

log = structlog.get_logger(__name__)

TRACKER_TTL = timedelta(minutes=3)
"""A tracker auth has not heard about for this long disappears (a node that died)."""
TRACKER_REFRESH = 60.0
"""Seconds between refreshes of a live session's tracker."""
MAX_JOINER_BUFFER = 4 * 1024 * 1024
"""A participant whose stream holds more unsent output than this is dropped (too slow)."""
CTRL_T = b"\x14"


class TrackerReporter(Protocol):
    """Where a node reports its live sessions (auth in process, or the API)."""

    async def report(self, tracker: SessionTracker) -> None: ...

    async def forget(self, session_id: str) -> None: ...


@dataclass(eq=False)
class _Joiner:
    user: str
    mode: JoinMode
    roles: tuple[str, ...]
    traits: Mapping[str, Sequence[str]]
    remote_addr: str
    transport: asyncio.Transport
    joined: datetime
    gone: bool = False

    def send(self, kind: FrameType, payload: bytes = b"") -> None:
        if self.gone or self.transport.is_closing():
            return
        self.transport.write(encode_frame(kind, payload))


@dataclass(eq=False)
class SharedSession:
    """One session's participants, moderation state and output fan-out (a session observer).

    Built by :meth:`SessionHub.open`; the callbacks belong to the owner's SSH session.
    """

    hub: SessionHub
    meta: SessionMeta
    authorized: Authorized
    remote_addr: str
    terminate: Callable[[str], Awaitable[None]]
    """Ends the session (the owner's terminator), with the reason."""
    write_input: Callable[[bytes], None]
    """Delivers a peer's keystrokes to the session's process."""
    notify_owner: Callable[[bytes], None]
    joiners: list[_Joiner] = field(default_factory=list)
    state: SessionState = "running"
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: bool = False
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        roles = self.authorized.roles.roles
        self.sets = policy_sets(((r.name, r.options.require_session_join) for r in roles), "ssh")
        self.owner = self.authorized.identity.user
        if not fulfilment(self.sets, [], self.owner).met:
            self.state = "pending"

    # -- the owner's side ----------------------------------------------------------------------

    @property
    def owner_may_type(self) -> bool:
        return self.state == "running"

    def _participants(self) -> list[Participant]:
        return [Participant(j.user, j.mode, j.roles, j.traits) for j in self.joiners if not j.gone]

    async def wait_until_ready(self) -> bool:
        """Wait until the moderation policies are met; False when the owner left first."""
        self._report()
        self._refresher = self.hub.tasks.spawn(
            self._refresh(), name=f"session-tracker-{self.meta.session_id}"
        )
        if self.state == "running":
            return True
        state = fulfilment(self.sets, self._participants(), self.owner)
        lines = "\r\n".join(f"  {w}" for w in state.waiting_for)
        self.notify_owner(
            f"bastion: this session must be moderated; waiting for:\r\n{lines}\r\n"
            f"bastion: a moderator joins with: bsh join {self.meta.session_id} "
            "--mode=moderator\r\n".encode()
        )
        await self._ready.wait()
        return not self._ended

    def owner_gone(self) -> None:
        """The owner's channel closed (maybe while still waiting)."""
        self._ended = True
        self._ready.set()

    # -- participants ----------------------------------------------------------------------------

    async def attach(
        self,
        identity: Identity,
        roles: Sequence[Role],
        mode: JoinMode,
        transport: asyncio.Transport,
        remote_addr: str,
    ) -> _Joiner:
        """Add a participant after the policy check.

        Raises:
            AccessDenied: the joiner may not join in this mode (or the session is ending).
        """
        decision = check_join(
            identity.user, roles, self.owner, list(self.authorized.identity.roles), "ssh", mode
        )
        if not decision.allowed or self._ended:
            await self._audit(
                "session.join", identity.user, mode, remote_addr, outcome="failure",
                reason=decision.reason if not decision.allowed else "the session is ending",
            )  # fmt: skip
            raise AccessDenied(decision.reason)
        joiner = _Joiner(
            identity.user, mode, tuple(identity.roles), identity.traits, remote_addr, transport,
            self.hub.deps.clock.now(),
        )  # fmt: skip
        self.joiners.append(joiner)
        if identity.user not in self.meta.participants:
            self.meta.participants.append(identity.user)
        await self._audit("session.join", identity.user, mode, remote_addr)
        self._announce(f"{identity.user} joined as {mode}", skip=joiner)
        joiner.send("n", f"joined {self.owner}'s session {self.meta.session_id} as {mode}".encode())
        self._reconsider()
        self._report()
        return joiner

    async def detach(self, joiner: _Joiner, reason: str = "left") -> None:
        """Remove a participant; pause or terminate when the policies are no longer met."""
        if joiner.gone:
            return
        joiner.gone = True
        with contextlib.suppress(ValueError):
            self.joiners.remove(joiner)
        with contextlib.suppress(Exception):
            joiner.transport.close()
        await self._audit("session.leave", joiner.user, joiner.mode, joiner.remote_addr,
                          reason=reason)  # fmt: skip
        if self._ended:
            return
        self._announce(f"{joiner.user} ({joiner.mode}) left")
        if self.state == "running" and self.sets:
            action = leave_action(self.sets, self._participants(), self.owner)
            if action == "terminate":
                self._ended = True
                await self.terminate(f"moderator {joiner.user} left the moderated session")
                return
            if action == "pause":
                self.state = "paused"
                self._announce("session paused: input is blocked until a moderator joins")
        self._report()

    def peer_input(self, joiner: _Joiner, data: bytes) -> None:
        if joiner.mode == "peer" and self.state == "running" and not self._ended:
            self.write_input(data)

    async def moderator_terminate(self, joiner: _Joiner) -> None:
        if joiner.mode != "moderator" or self._ended:
            joiner.send("n", b"only a moderator can terminate the session")
            return
        self._ended = True
        await self.terminate(f"terminated by moderator {joiner.user}")

    def _reconsider(self) -> None:
        """After a join: start a pending session or resume a paused one when the policies hold."""
        if (
            self.state == "running"
            or not fulfilment(self.sets, self._participants(), self.owner).met
        ):
            return
        was, self.state = self.state, "running"
        if was == "paused":
            self._announce("session resumed")
        self._ready.set()

    def _announce(self, text: str, skip: _Joiner | None = None) -> None:
        self.notify_owner(f"\r\nbastion: {text}\r\n".encode())
        for joiner in list(self.joiners):
            if joiner is not skip:
                joiner.send("n", text.encode())

    async def _audit(
        self, event: str, user: str, mode: str, remote: str, *, outcome: str = "success",
        reason: str = "",
    ) -> None:  # fmt: skip
        await self.hub.deps.audit.emit(
            event,
            outcome=outcome,
            user=user,
            login=self.authorized.login,
            target=self.hub.deps.config.name,
            remote_addr=remote,
            session_id=self.meta.session_id,
            participant=user,
            mode=mode,
            owner=self.owner,
            reason=reason,
        )

    # -- the observer side -------------------------------------------------------------------

    async def on_start(self, meta: SessionMeta) -> None:
        return None

    def on_output(self, data: bytes) -> None:
        for joiner in list(self.joiners):
            if joiner.transport.get_write_buffer_size() > MAX_JOINER_BUFFER:
                self.hub.tasks.spawn(self.detach(joiner, "too slow"), name="session-join-drop")
                continue
            joiner.send("o", data)

    def on_input(self, data: bytes) -> None:
        return None

    def on_resize(self, cols: int, rows: int) -> None:
        return None

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None:
        self._ended = True
        self._ready.set()
        self.hub.sessions.pop(meta.session_id, None)
        if self._refresher is not None:
            self._refresher.cancel()
        for joiner in list(self.joiners):
            joiner.send("e", b"the session ended")
            await self.detach(joiner, "the session ended")
        self._forget()
        return None

    # -- the tracker ---------------------------------------------------------------------------

    def tracker(self) -> SessionTracker:
        clock = self.hub.deps.clock
        config = self.hub.deps.config
        waiting = () if self.state == "running" else fulfilment(
            self.sets, self._participants(), self.owner
        ).waiting_for  # fmt: skip
        parts = [SessionParticipant(user=self.owner, mode="owner", joined=self.meta.started)]
        parts += [SessionParticipant(user=j.user, mode=j.mode, joined=j.joined)
                  for j in self.joiners if not j.gone]  # fmt: skip
        return SessionTracker(
            metadata=Metadata(name=self.meta.session_id, expires=clock.now() + TRACKER_TTL),
            spec=SessionTrackerSpec(
                node=config.name,
                host_id=config.host_id,
                owner=self.owner,
                owner_roles=list(self.authorized.identity.roles),
                login=self.authorized.login,
                command=self.meta.command,
                state=self.state,
                participants=parts,
                waiting_for=list(waiting),
                started=self.meta.started,
            ),
        )

    def _report(self) -> None:
        reporter = self.hub.reporter
        if reporter is None or self._ended:
            return
        tracker = self.tracker()
        self.hub.tasks.spawn(self._call(reporter.report(tracker)), name="session-tracker")

    def _forget(self) -> None:
        reporter = self.hub.reporter
        if reporter is not None:
            self.hub.tasks.spawn(
                self._call(reporter.forget(self.meta.session_id)), name="session-tracker-forget"
            )

    async def _call(self, call: Awaitable[None]) -> None:
        try:
            await call
        except (BastionError, OSError) as exc:
            log.warning("session tracker not reported", session_id=self.meta.session_id,
                        error=str(exc))  # fmt: skip

    async def _refresh(self) -> None:
        while not self._ended:
            await asyncio.sleep(TRACKER_REFRESH)
            self._report()


class _JoinProtocol(asyncio.Protocol):
    """A participant's stream: decodes frames and hands them to the shared session."""

    def __init__(self, shared: SharedSession) -> None:
        self.shared = shared
        self.joiner: _Joiner | None = None
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if self.joiner is None:
            self.pending.append(data)
            return
        try:
            frames = self.decoder.feed(data)
        except BastionError:
            self._leave("protocol error")
            return
        for frame in frames:
            if frame.type == "i":
                self.shared.peer_input(self.joiner, frame.payload)
            elif frame.type == "t":
                self.shared.hub.tasks.spawn(
                    self.shared.moderator_terminate(self.joiner), name="session-join-terminate"
                )

    def eof_received(self) -> bool:
        self._leave("left")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave("left")

    def _leave(self, reason: str) -> None:
        if self.joiner is not None and not self.joiner.gone:
            self.shared.hub.tasks.spawn(
                self.shared.detach(self.joiner, reason), name="session-join-leave"
            )

    def attached(self, joiner: _Joiner) -> None:
        self.joiner = joiner
        for chunk in self.pending:
            self.data_received(chunk)
        self.pending.clear()


class SessionHub:
    """The node's shared sessions by id, and the door for joining them."""

    def __init__(self, deps: NodeDeps, tasks: TaskSet) -> None:
        self.deps = deps
        self.tasks = tasks
        self.sessions: dict[str, SharedSession] = {}
        self.reporter: TrackerReporter | None = None

    def open(
        self,
        meta: SessionMeta,
        authorized: Authorized,
        remote_addr: str,
        *,
        terminate: Callable[[str], Awaitable[None]],
        write_input: Callable[[bytes], None],
        notify_owner: Callable[[bytes], None],
    ) -> SharedSession | None:
        """Share a new session; None for file transfer (never shared).

        Raises:
            AccessDenied: file transfer in a session that must be moderated.
        """
        shared = SharedSession(
            self, meta, authorized, remote_addr, terminate, write_input, notify_owner
        )
        if meta.kind == "subsystem":
            if shared.sets:
                raise AccessDenied("file transfer is not available in moderated sessions")
            return None
        self.sessions[meta.session_id] = shared
        return shared

    async def accept_join(self, transport: asyncio.Transport, header: Mapping[str, Any]) -> None:
        """Serve one ``session_join`` stream from the proxy (header from
        :func:`bastion.proxy.join_route.join_header`)."""
        session_id = str(header.get("session_id", ""))
        mode = str(header.get("mode", ""))
        remote = str(header.get("client_addr", ""))
        shared = self.sessions.get(session_id)
        protocol = _JoinProtocol(shared) if shared is not None else None
        try:
            identity = Identity.decode(str(header.get("identity", "")))
            if shared is None or protocol is None or mode not in JOIN_MODES:
                raise AccessDenied(f"session {session_id} not found")
            transport.set_protocol(protocol)
            roles = await self.deps.roles.get_roles(identity.roles)
            joiner = await shared.attach(identity, roles, mode, transport, remote)
        except (AccessDenied, ValueError, BastionError) as exc:
            log.info("session join refused", session_id=session_id, reason=str(exc))
            message = (
                f"session {session_id} not found" if isinstance(exc, AccessDenied) else str(exc)
            )
            transport.write(encode_frame("e", message.encode()))
            transport.close()
            return
        protocol.attached(joiner)
        if transport.is_reading():
            transport.pause_reading()
        transport.resume_reading()


class APITrackers:
    """A remote node's tracker reporter: the auth API (through the proxy) with its host
    certificate."""

    def __init__(self, remote: RemoteAuth) -> None:
        self._remote = remote

    async def report(self, tracker: SessionTracker) -> None:
        await self._remote.send(
            REPORT_SESSION, TrackerBody(tracker=tracker), path={"session_id": tracker.name}
        )

    async def forget(self, session_id: str) -> None:
        await self._remote.send(FORGET_SESSION, Empty(), path={"session_id": session_id})
