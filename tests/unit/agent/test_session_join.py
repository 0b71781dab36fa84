"""The node's shared sessions: a moderated session waits, runs, and ends when its moderator
leaves; observers cannot type, peers can; a refused join looks like a missing session."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bastion.agent.deps import NodeConfig, NodeDeps
from bastion.agent.session import SessionMeta
from bastion.agent.session_join import SessionHub
from bastion.agent.ssh_auth import Authorized
from bastion.clock import FakeClock
from bastion.live.registry import LiveRegistry
from bastion.protocols.sessionjoin import FrameDecoder
from bastion.rbac.checker import RoleSet
from bastion.tasks import TaskSet
from bastion.types.access import Role
from bastion.types.identity import Identity

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
PROD = Role.model_validate({"metadata": {"name": "prod"}, "spec": {"options": {
    "require_session_join": [{"modes": ["moderator"], "on_leave": "terminate"}]}}})  # fmt: skip
MOD = Role.model_validate({"metadata": {"name": "mod"}, "spec": {"allow": {
    "join_sessions": [{"roles": ["*"], "modes": ["moderator", "observer", "peer"]}]}}})  # fmt: skip


class Roles:
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [r for r in (PROD, MOD) if r.metadata.name in names]


class Emitter:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: Any) -> None:
        self.events.append((event_type, {"outcome": outcome, **fields}))


class Pipe(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out, self.closed, self.protocol = b"", False, None

    def write(self, data: Any) -> None:
        self.out += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def frames(self) -> list[tuple[str, bytes]]:
        return [(f.type, f.payload) for f in FrameDecoder().feed(self.out)]


def ident(user: str, *roles: str) -> Identity:
    return Identity(cluster="c", user=user, roles=roles, expires=EXPIRES)


def world(owner_roles: tuple[str, ...]) -> tuple[SessionHub, Any, Emitter, list[Any]]:
    audit = Emitter()
    deps = NodeDeps(
        config=NodeConfig("web1", "c", "h1", "", "", ()), roles=Roles(), audit=audit,  # type: ignore[arg-type]
        registry=LiveRegistry(), clock=FakeClock(),
    )  # fmt: skip
    hub = SessionHub(deps, TaskSet())
    owner = ident("alice", *owner_roles)
    roleset = RoleSet.from_roles([r for r in (PROD, MOD) if r.metadata.name in owner_roles], {})
    authorized = Authorized(owner, roleset, None, "root", "")  # type: ignore[arg-type]
    calls: list[Any] = []

    async def terminate(reason: str) -> None:
        calls.append(("terminate", reason))

    meta = SessionMeta("s1", "alice", "root", "web1", "", "shell", participants=["alice"])
    shared = hub.open(meta, authorized, "", terminate=terminate,
                      write_input=lambda d: calls.append(("input", d)),
                      notify_owner=lambda d: calls.append(("notice", d)))  # fmt: skip
    return hub, shared, audit, calls


async def join(hub: SessionHub, user: str, mode: str) -> Pipe:
    pipe = Pipe()
    header = {"session_id": "s1", "mode": mode, "identity": ident(user, "mod").encode().decode()}
    await hub.accept_join(pipe, header)
    return pipe


async def test_a_moderated_session_waits_then_terminates_when_the_moderator_leaves() -> None:
    hub, shared, audit, calls = world(("prod",))
    waiting = asyncio.ensure_future(shared.wait_until_ready())
    await asyncio.sleep(0)
    assert not waiting.done() and shared.state == "pending"
    assert any(b"waiting for" in c[1] for c in calls if c[0] == "notice")
    assert not shared.owner_may_type  # input typed while waiting is dropped
    observer = await join(hub, "olga", "observer")
    await asyncio.sleep(0)
    assert not waiting.done()  # an observer does not moderate
    moderator = await join(hub, "bob", "moderator")
    assert await waiting is True and shared.state == "running"
    shared.on_output(b"hello")
    assert ("o", b"hello") in moderator.frames() and ("o", b"hello") in observer.frames()
    await shared.detach(shared.joiners[-1])
    assert ("terminate", "moderator bob left the moderated session") in calls
    kinds = [(e, f["participant"], f["mode"]) for e, f in audit.events]
    assert ("session.join", "bob", "moderator") in kinds
    assert ("session.leave", "bob", "moderator") in kinds
    assert shared.meta.participants == ["alice", "olga", "bob"]


async def test_only_peers_type_and_refusals_look_like_missing_sessions() -> None:
    hub, shared, _, calls = world(("mod",))
    assert await shared.wait_until_ready() is True
    observer, peer = await join(hub, "olga", "observer"), await join(hub, "pat", "peer")
    observer.protocol.data_received(b"i\x00\x00\x00\x03obs")  # type: ignore[attr-defined]
    peer.protocol.data_received(b"i\x00\x00\x00\x04peer")  # type: ignore[attr-defined]
    assert [c for c in calls if c[0] == "input"] == [("input", b"peer")]
    own = await join(hub, "alice", "observer")  # nobody joins their own session
    assert own.frames() == [("e", b"session s1 not found")] and own.closed
    missing = Pipe()
    await hub.accept_join(missing, {"session_id": "nope", "mode": "observer",
                                    "identity": ident("bob", "mod").encode().decode()})  # fmt: skip
    assert missing.frames() == [("e", b"session nope not found")]
    await shared.on_end(shared.meta)
    assert ("e", b"the session ended") in peer.frames() and "s1" not in hub.sessions
