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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bastion.agent.deps import NodeDeps
from bastion.agent.remote import RemoteAuth
from bastion.agent.session import SessionMeta
from bastion.agent.ssh_auth import Authorized
from bastion.contract.base import Empty
from bastion.contract.sessions import FORGET_SESSION, REPORT_SESSION, TrackerBody
from bastion.errors import AccessDenied
from bastion.live.moderated import Joiner, ModeratedSession, TrackerReporter, serve_join
from bastion.rbac.moderation import policy_sets
from bastion.tasks import TaskSet
from bastion.types.sessions import SessionKind, SessionTracker

__all__ = ["APITrackers", "SessionHub", "SharedSession"]


@dataclass(eq=False, kw_only=True)
class SharedSession(ModeratedSession):
    """One SSH session's participants, moderation state and output fan-out (a session
    observer). Built by :meth:`SessionHub.open`; the callbacks belong to the owner's session."""

    kind: ClassVar[SessionKind] = "ssh"
    pause_text: ClassVar[str] = "session paused: input is blocked until a moderator joins"

    hub: SessionHub
    meta: SessionMeta
    authorized: Authorized
    remote_addr: str
    write_input: Callable[[bytes], None]
    """Delivers a peer's keystrokes to the session's process."""
    notify_owner: Callable[[bytes], None]

    # -- the owner's side ----------------------------------------------------------------------

    @property
    def owner_may_type(self) -> bool:
        return self.state == "running"

    async def wait_until_ready(self) -> bool:
        """Wait until the moderation policies are met; False when the owner left first."""
        self.start_tracking()
        if self.state == "running":
            return True
        lines = "\r\n".join(f"  {w}" for w in self.waiting_for())
        self.notify_owner(
            f"bastion: this session must be moderated; waiting for:\r\n{lines}\r\n"
            f"bastion: a moderator joins with: bsh join {self.session_id} "
            "--mode=moderator\r\n".encode()
        )
        return await super().wait_until_ready()

    def owner_gone(self) -> None:
        """The owner's channel closed (maybe while still waiting)."""
        self.stop_waiting()

    # -- hooks of ModeratedSession -------------------------------------------------------------

    def peer_input(self, joiner: Joiner, data: bytes) -> None:
        if joiner.mode == "peer" and self.state == "running" and not self.ended:
            self.write_input(data)

    def _notify_owner(self, text: str) -> None:
        self.notify_owner(f"\r\nbastion: {text}\r\n".encode())

    def _tracker_fields(self) -> dict[str, Any]:
        config = self.hub.deps.config
        return {
            "node": config.name,
            "host_id": config.host_id,
            "login": self.authorized.login,
            "command": self.meta.command,
        }

    # -- the observer side -------------------------------------------------------------------

    async def on_start(self, meta: SessionMeta) -> None:
        return None

    def on_output(self, data: bytes) -> None:
        self.broadcast(data)

    def on_input(self, data: bytes) -> None:
        return None

    def on_resize(self, cols: int, rows: int) -> None:
        return None

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None:
        self.hub.sessions.pop(meta.session_id, None)
        await self.finish("the session ended")
        return None


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
        roles = authorized.roles.roles
        shared = SharedSession(
            session_id=meta.session_id,
            owner=authorized.identity.user,
            owner_roles=tuple(authorized.identity.roles),
            sets=policy_sets(((r.name, r.options.require_session_join) for r in roles), "ssh"),
            started=meta.started,
            clock=self.deps.clock,
            tasks=self.tasks,
            audit=self.deps.audit,
            reporter=self.reporter,
            audit_fields={"login": authorized.login, "target": self.deps.config.name},
            terminate=terminate,
            participants=meta.participants,
            hub=self,
            meta=meta,
            authorized=authorized,
            remote_addr=remote_addr,
            write_input=write_input,
            notify_owner=notify_owner,
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
        await serve_join(self.sessions, self.deps.roles, transport, header)


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
