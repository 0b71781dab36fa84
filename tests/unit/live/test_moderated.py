"""The moderation state machine every shared session kind uses: pending until the policies
hold, pause on a breaking leave and resume on a join, the tracker, and joins that read as a
missing session when refused. (The SSH and database kinds have their own tests.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from bastion.clock import FakeClock
from bastion.live.moderated import ModeratedSession, serve_join
from bastion.protocols.sessionjoin import FrameDecoder
from bastion.rbac.moderation import policy_sets
from bastion.tasks import TaskSet
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.sessions import SessionKind, SessionTracker

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
OWNER = Role.model_validate({"metadata": {"name": "prod"}, "spec": {"options": {
    "require_session_join": [{"modes": ["moderator"], "on_leave": "pause"}]}}})  # fmt: skip
MOD = Role.model_validate({"metadata": {"name": "mod"}, "spec": {"allow": {
    "join_sessions": [{"roles": ["*"], "modes": ["moderator", "observer"]}]}}})  # fmt: skip


class Roles:
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [r for r in (OWNER, MOD) if r.metadata.name in names]


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: Any) -> None:
        self.events.append((event_type, str(fields["user"]), outcome))


class Trackers:
    def __init__(self) -> None:
        self.reported: list[SessionTracker] = []
        self.forgotten: list[str] = []

    async def report(self, tracker: SessionTracker) -> None:
        self.reported.append(tracker)

    async def forget(self, session_id: str) -> None:
        self.forgotten.append(session_id)


class Pipe(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out, self.closed = b"", False

    def write(self, data: Any) -> None:
        self.out += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None: ...

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def frames(self) -> list[tuple[str, bytes]]:
        return [(f.type, f.payload) for f in FrameDecoder().feed(self.out)]


@dataclass(eq=False, kw_only=True)
class Session(ModeratedSession):
    kind: ClassVar[SessionKind] = "ssh"
    held: bool = False

    def _on_pause(self) -> None:
        self.held = True

    def _on_resume(self) -> None:
        self.held = False

    def _tracker_fields(self) -> dict[str, Any]:
        return {"node": "web1", "host_id": "h1", "login": "root", "command": ""}


def _session(audit: Audit, trackers: Trackers, ended: list[str]) -> Session:
    async def terminate(reason: str) -> None:
        ended.append(reason)

    return Session(
        session_id="s1", owner="alice", owner_roles=("prod",),
        sets=policy_sets([("prod", OWNER.spec.options.require_session_join)], "ssh"),
        started=EXPIRES, clock=FakeClock(), tasks=TaskSet(), audit=audit, reporter=trackers,
        audit_fields={"login": "root", "target": "web1"}, terminate=terminate,
    )  # fmt: skip


async def _join(session: Session, user: str, mode: str) -> Pipe:
    pipe = Pipe()
    who = Identity(cluster="c", user=user, roles=("mod",), expires=EXPIRES)
    header = {"session_id": session.session_id, "mode": mode, "identity": who.encode().decode()}
    await serve_join({session.session_id: session}, Roles(), pipe, header)
    return pipe


async def test_pending_until_a_moderator_then_paused_and_resumed() -> None:
    audit, trackers, ended = Audit(), Trackers(), []
    session = _session(audit, trackers, ended)
    assert session.state == "pending" and session.waiting_for()
    session.start_tracking()
    ready = asyncio.ensure_future(session.wait_until_ready())
    watcher = await _join(session, "olga", "observer")  # an observer does not satisfy it
    assert not ready.done() and session.state == "pending"
    mod = await _join(session, "mo", "moderator")
    assert await ready is True and session.state == "running"
    session.broadcast(b"output")
    assert ("o", b"output") in watcher.frames() and ("o", b"output") in mod.frames()
    await session.detach(session.joiners[-1])  # the moderator leaves: on_leave pause
    assert session.state == "paused" and session.held and ended == []
    await _join(session, "mo", "moderator")
    assert session.state == "running" and not session.held
    await asyncio.sleep(0)  # the tracker reports run as tasks
    assert trackers.reported[-1].spec.state == "running"
    await session.finish("the session ended")
    await asyncio.sleep(0)
    assert trackers.forgotten == ["s1"] and session.participants == ["olga", "mo"]
    assert ("e", b"the session ended") in watcher.frames()
    assert ("session.join", "mo", "success") in audit.events
    assert ("session.leave", "olga", "success") in audit.events


async def test_refused_and_unknown_joins_read_as_a_missing_session() -> None:
    audit, trackers, ended = Audit(), Trackers(), []
    session = _session(audit, trackers, ended)
    stranger = Pipe()
    nobody = Identity(cluster="c", user="eve", roles=("prod",), expires=EXPIRES)
    header = {"session_id": "s1", "mode": "moderator", "identity": nobody.encode().decode()}
    await serve_join({"s1": session}, Roles(), stranger, header)
    assert stranger.frames() == [("e", b"session s1 not found")] and stranger.closed
    assert ("session.join", "eve", "failure") in audit.events
    unknown = Pipe()
    await serve_join({}, Roles(), unknown, {**header, "session_id": "s2"})
    assert unknown.frames() == [("e", b"session s2 not found")]
    mod = await _join(session, "mo", "moderator")
    await session.moderator_terminate(session.joiners[0])
    assert ended == ["terminated by moderator mo"] and mod.frames()
