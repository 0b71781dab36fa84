"""A shared session's participants and its moderation state machine, for every kind.

Layer: ``live`` (IO shell around the pure :mod:`bastion.rbac.moderation`). One
:class:`ModeratedSession` per live session that others may join: SSH sessions on the node
(:mod:`bastion.agent.session_join`) and database sessions in the proxy
(:mod:`bastion.proxy.db_moderation`) subclass it and add only what differs (how the owner is
told, how input is held, what the tracker names).

* **Joining**: :meth:`ModeratedSession.attach` decides with
  :func:`~bastion.rbac.moderation.check_join`; a refusal is audited and, to the joiner, looks like
  a session that does not exist (:func:`serve_join`). Frames are those of
  :mod:`bastion.protocols.sessionjoin`: output to every participant, input from peers only, a
  moderator's terminate frame ends the session.
* **Moderation**: while the owner's ``require_session_join`` policies are not met the session is
  ``pending`` (it waits); a join that meets them starts (or resumes) it; a leave that breaks them
  pauses or terminates it per ``on_leave``.
* **Audit**: ``session.join`` / ``session.leave`` for every participant, with the kind's fields.
* **Tracker**: the session is reported to auth (refreshed while it lives, removed at its end) so
  ``bsh sessions ls`` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

import structlog

from bastion.audit.emitter import Emitter
from bastion.clock import Clock
from bastion.errors import AccessDenied, BastionError
from bastion.protocols.sessionjoin import FrameDecoder, FrameType, encode_frame
from bastion.rbac.moderation import Participant, PolicySet, check_join, fulfilment, leave_action
from bastion.tasks import TaskSet
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.types.sessions import (
    JOIN_MODES,
    JoinMode,
    SessionKind,
    SessionParticipant,
    SessionState,
    SessionTracker,
    SessionTrackerSpec,
)

__all__ = [
    "MAX_JOINER_BUFFER",
    "TRACKER_REFRESH",
    "TRACKER_TTL",
    "Joiner",
    "ModeratedSession",
    "RoleSource",
    "TrackerReporter",
    "serve_join",
]

log = structlog.get_logger(__name__)

TRACKER_TTL = timedelta(minutes=3)
"""A tracker auth has not heard about for this long disappears (its host died)."""
TRACKER_REFRESH = 60.0
"""Seconds between refreshes of a live session's tracker."""
MAX_JOINER_BUFFER = 4 * 1024 * 1024
"""A participant whose stream holds more unsent output than this is dropped (too slow)."""


class TrackerReporter(Protocol):
    """Where live sessions are reported (auth in process, or the API)."""

    async def report(self, tracker: SessionTracker) -> None: ...

    async def forget(self, session_id: str) -> None: ...


class RoleSource(Protocol):
    async def get_roles(self, names: Sequence[str]) -> list[Role]: ...


@dataclass(eq=False)
class Joiner:
    """One participant's stream."""

    user: str
    mode: JoinMode
    roles: tuple[str, ...]
    traits: Mapping[str, Sequence[str]]
    remote_addr: str
    transport: asyncio.Transport
    joined: datetime
    gone: bool = False

    def send(self, kind: FrameType, payload: bytes = b"") -> None:
        if not self.gone and not self.transport.is_closing():
            self.transport.write(encode_frame(kind, payload))


@dataclass(eq=False)
class ModeratedSession:
    """Participants, moderation state, output fan-out and tracker of one shared session.

    Subclasses set :attr:`kind` and override the hooks (``_joined_text``, ``_on_resume``,
    ``_on_pause``, ``_notify_owner``, ``_tracker_fields``, ``peer_input``).
    """

    kind: ClassVar[SessionKind]
    """``ssh`` or ``db``: the policies' and the join rules' kind."""
    pause_text: ClassVar[str] = "session paused until a moderator joins"

    session_id: str
    owner: str
    owner_roles: tuple[str, ...]
    sets: tuple[PolicySet, ...]
    started: datetime | None
    clock: Clock
    tasks: TaskSet
    audit: Emitter
    reporter: TrackerReporter | None
    audit_fields: Mapping[str, str]
    """``login`` and ``target`` (and ``kind``) of the join and leave events."""
    terminate: Callable[[str], Awaitable[None]]
    """Ends the owner's session, with the reason."""
    participants: list[str] = field(default_factory=list)
    """Everyone who joined (listed in the session's end event and recording)."""
    joiners: list[Joiner] = field(default_factory=list)
    state: SessionState = "running"
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: bool = False
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if not fulfilment(self.sets, [], self.owner).met:
            self.state = "pending"

    # -- hooks -------------------------------------------------------------------------------

    def _joined_text(self, mode: str) -> str:
        return f"joined {self.owner}'s session {self.session_id} as {mode}"

    def _on_resume(self) -> None:
        """A paused session runs again (release whatever the pause held)."""

    def _on_pause(self) -> None:
        """A leave broke the policies: hold the owner's input."""

    def _notify_owner(self, text: str) -> None:
        """Tell the session's owner (their terminal), when the kind has a way to."""

    def _tracker_fields(self) -> dict[str, Any]:
        """``node``, ``host_id``, ``login``, ``command`` (and ``kind``) of the tracker."""
        raise NotImplementedError

    def peer_input(self, joiner: Joiner, data: bytes) -> None:
        """A peer typed (only kinds with an input stream take it)."""

    # -- state ---------------------------------------------------------------------------------

    def present(self) -> list[Participant]:
        return [Participant(j.user, j.mode, j.roles, j.traits) for j in self.joiners if not j.gone]

    def waiting_for(self) -> tuple[str, ...]:
        """Who must still join before the session runs (empty: nobody)."""
        return fulfilment(self.sets, self.present(), self.owner).waiting_for

    @property
    def ended(self) -> bool:
        return self._ended

    def start_tracking(self) -> None:
        """Report the session now and refresh the report while it lives."""
        self.report()
        self._refresher = self.tasks.spawn(
            self._refresh(), name=f"session-tracker-{self.session_id}"
        )

    async def wait_until_ready(self) -> bool:
        """Wait until the policies are met; False when the session ended first."""
        await self._ready.wait()
        return not self._ended

    def stop_waiting(self) -> None:
        """The owner went away (maybe while the session still waited)."""
        self._ended = True
        self._ready.set()

    # -- participants ------------------------------------------------------------------------

    async def attach(
        self,
        identity: Identity,
        roles: Sequence[Role],
        mode: JoinMode,
        transport: asyncio.Transport,
        remote_addr: str,
    ) -> Joiner:
        """Add a participant after the policy check.

        Raises:
            AccessDenied: the joiner may not join in this mode (or the session is ending).
        """
        decision = check_join(
            identity.user, roles, self.owner, list(self.owner_roles), self.kind, mode
        )
        if not decision.allowed or self._ended:
            reason = decision.reason if not decision.allowed else "the session is ending"
            await self._audit("session.join", identity.user, mode, remote_addr, "failure", reason)
            raise AccessDenied(decision.reason)
        joiner = Joiner(
            identity.user, mode, tuple(identity.roles), identity.traits, remote_addr, transport,
            self.clock.now(),
        )  # fmt: skip
        self.joiners.append(joiner)
        if identity.user not in self.participants:
            self.participants.append(identity.user)
        await self._audit("session.join", identity.user, mode, remote_addr)
        self.announce(f"{identity.user} joined as {mode}", skip=joiner)
        joiner.send("n", self._joined_text(mode).encode())
        if self.state != "running" and fulfilment(self.sets, self.present(), self.owner).met:
            was, self.state = self.state, "running"
            if was == "paused":
                self._on_resume()
                self.announce("session resumed")
            self._ready.set()
        self.report()
        return joiner

    async def detach(self, joiner: Joiner, reason: str = "left") -> None:
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
        self.announce(f"{joiner.user} ({joiner.mode}) left")
        if self.state == "running" and self.sets:
            action = leave_action(self.sets, self.present(), self.owner)
            if action == "terminate":
                await self.end_by(f"moderator {joiner.user} left the moderated session")
                return
            if action == "pause":
                self.state = "paused"
                self._on_pause()
                self.announce(self.pause_text)
        self.report()

    async def moderator_terminate(self, joiner: Joiner) -> None:
        if joiner.mode != "moderator" or self._ended:
            joiner.send("n", b"only a moderator can terminate the session")
            return
        await self.end_by(f"terminated by moderator {joiner.user}")

    async def end_by(self, reason: str) -> None:
        """End the owner's session (a moderator's terminate, or a leave's policy)."""
        self._ended = True
        self._ready.set()
        await self.terminate(reason)

    async def finish(self, reason: str, *, forget: bool = True) -> None:
        """The session is over: tell and drop every participant, stop the tracker (``forget``:
        and remove it in the background)."""
        self._ended = True
        self._ready.set()
        if self._refresher is not None:
            self._refresher.cancel()
        for joiner in list(self.joiners):
            joiner.send("e", reason.encode())
            await self.detach(joiner, reason)
        if forget and self.reporter is not None:
            self.tasks.spawn(
                self._call(self.reporter.forget(self.session_id)), name="session-tracker-forget"
            )

    def broadcast(self, data: bytes) -> None:
        """Output of the session to every participant (a too slow one is dropped)."""
        for joiner in list(self.joiners):
            if joiner.transport.get_write_buffer_size() > MAX_JOINER_BUFFER:
                self.tasks.spawn(self.detach(joiner, "too slow"), name="session-join-drop")
                continue
            joiner.send("o", data)

    def announce(self, text: str, skip: Joiner | None = None) -> None:
        self._notify_owner(text)
        for joiner in list(self.joiners):
            if joiner is not skip:
                joiner.send("n", text.encode())

    async def _audit(
        self, event: str, user: str, mode: str, remote: str, outcome: str = "success",
        reason: str = "",
    ) -> None:  # fmt: skip
        await self.audit.emit(
            event,
            outcome=outcome,
            user=user,
            remote_addr=remote,
            session_id=self.session_id,
            participant=user,
            mode=mode,
            owner=self.owner,
            reason=reason,
            **self.audit_fields,
        )

    # -- the tracker ---------------------------------------------------------------------------

    def tracker(self) -> SessionTracker:
        waiting = () if self.state == "running" else self.waiting_for()
        parts = [SessionParticipant(user=self.owner, mode="owner", joined=self.started)]
        parts += [SessionParticipant(user=j.user, mode=j.mode, joined=j.joined)
                  for j in self.joiners if not j.gone]  # fmt: skip
        return SessionTracker(
            metadata=Metadata(name=self.session_id, expires=self.clock.now() + TRACKER_TTL),
            spec=SessionTrackerSpec(
                owner=self.owner,
                owner_roles=list(self.owner_roles),
                state=self.state,
                participants=parts,
                waiting_for=list(waiting),
                started=self.started,
                **self._tracker_fields(),
            ),
        )

    def report(self) -> None:
        if self.reporter is not None and not self._ended:
            self.tasks.spawn(self._call(self.reporter.report(self.tracker())), "session-tracker")

    async def _call(self, call: Awaitable[None]) -> None:
        try:
            await call
        except (BastionError, OSError) as exc:
            log.warning("session tracker not reported", session_id=self.session_id,
                        error=str(exc))  # fmt: skip

    async def _refresh(self) -> None:
        while not self._ended:
            await asyncio.sleep(TRACKER_REFRESH)
            self.report()


class _JoinProtocol(asyncio.Protocol):
    """A participant's stream: decodes frames (held until the join is decided) and hands them
    to the session."""

    def __init__(self, session: ModeratedSession) -> None:
        self.session = session
        self.joiner: Joiner | None = None
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
                self.session.peer_input(self.joiner, frame.payload)
            elif frame.type == "t":
                self.session.tasks.spawn(
                    self.session.moderator_terminate(self.joiner), name="session-join-terminate"
                )

    def eof_received(self) -> bool:
        self._leave("left")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave("left")

    def _leave(self, reason: str) -> None:
        if self.joiner is not None and not self.joiner.gone:
            self.session.tasks.spawn(
                self.session.detach(self.joiner, reason), name="session-join-leave"
            )

    def attached(self, joiner: Joiner) -> None:
        self.joiner = joiner
        for chunk in self.pending:
            self.data_received(chunk)
        self.pending.clear()


async def serve_join(
    sessions: Mapping[str, ModeratedSession],
    roles: RoleSource,
    transport: asyncio.Transport,
    header: Mapping[str, Any],
) -> None:
    """Serve one join stream (header of :func:`bastion.proxy.join_route.join_header`): the
    session by id, the joiner's current roles, :meth:`ModeratedSession.attach`. Any refusal
    reads as a session that does not exist."""
    session_id = str(header.get("session_id", ""))
    mode = str(header.get("mode", ""))
    session = sessions.get(session_id)
    try:
        identity = Identity.decode(str(header.get("identity", "")))
        if session is None:
            raise AccessDenied(f"session {session_id} not found")
        joined = next((m for m in JOIN_MODES if m == mode), None)
        if joined is None:
            raise AccessDenied(f"session {session_id} not found")
        protocol = _JoinProtocol(session)
        transport.set_protocol(protocol)
        member_roles = await roles.get_roles(identity.roles)
        joiner = await session.attach(
            identity, member_roles, joined, transport, str(header.get("client_addr", ""))
        )
    except (ValueError, BastionError) as exc:
        log.info("session join refused", session_id=session_id, reason=str(exc))
        message = f"session {session_id} not found" if isinstance(exc, AccessDenied) else str(exc)
        transport.write(encode_frame("e", message.encode()))
        transport.close()
        return
    protocol.attached(joiner)
    if transport.is_reading():
        transport.pause_reading()
    transport.resume_reading()
