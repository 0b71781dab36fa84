"""LockWatcher: the view it keeps, live enforcement order, strict mode on unknown state."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bastion.backend.base import Item
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import LockTargets, identity_targets
from bastion.locks.watcher import LockWatcher, split_by_side
from bastion.services.cache import ResourceCache
from bastion.types.access import Lock, LockSpec, LockTarget, Role, RoleOptions, RoleSpec
from bastion.types.audit import AuditEvent
from bastion.types.codec import resource_to_dict
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

START = datetime(2026, 1, 1, tzinfo=UTC)


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        self.events.append({"type": event_type, "outcome": outcome, **fields})
        return None


def ident(user: str, roles: tuple[str, ...] = ("dev",)) -> Identity:
    return Identity(cluster="c", user=user, roles=roles, expires=START + timedelta(hours=1))


def make_lock(name: str, message: str = "", **target: str) -> Lock:
    return Lock(
        metadata=Metadata(name=name), spec=LockSpec(target=LockTarget(**target), message=message)
    )


class Ended:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.event = asyncio.Event()

    def conn(
        self, registry: LiveRegistry, kind: str, user: str, target: str = "web1"
    ) -> LiveConnection:
        entry = LiveConnection(kind=kind, identity=ident(user), target=target, login="root")

        async def terminate(reason: str) -> None:
            self.log.append((f"{kind}:{user}", reason))
            registry.remove(entry)
            self.event.set()

        entry.terminate = terminate
        return registry.add(entry)


@pytest.fixture
def setup() -> tuple[LockWatcher, LiveRegistry, Ended, Audit, FakeClock]:
    clock = FakeClock(START)
    registry = LiveRegistry()
    audit = Audit()
    watcher = LockWatcher(clock=clock, audit=audit, registry=registry, grace=0)
    return watcher, registry, Ended(), audit, clock


async def test_enforce_ends_matching_agent_side_first(setup: Any) -> None:
    watcher, registry, ended, audit, _ = setup
    ended.conn(registry, "ssh", "alice")
    ended.conn(registry, "ssh_session", "alice")
    ended.conn(registry, "port_forward", "alice")
    ended.conn(registry, "ssh_session", "bob")
    gone = await watcher.enforce([make_lock("l1", "laptop stolen", user="alice")])
    assert len(gone) == 3
    assert [who for who, _ in ended.log][-1] == "ssh:alice"  # the proxy relay goes last
    assert {reason for _, reason in ended.log} == {"locked: laptop stolen"}
    assert [c.identity.user for c in registry] == ["bob"]
    # The node session audits itself; the others are audited here, with the lock's name.
    audited = [(e["kind"], e["lock"]) for e in audit.events if e["type"] == "session.terminated"]
    assert sorted(audited) == [("port_forward", "l1"), ("ssh", "l1")]


async def test_locking_a_node_ends_every_session_on_it(setup: Any) -> None:
    watcher, registry, ended, _, _ = setup
    ended.conn(registry, "ssh_session", "alice", "web1")
    ended.conn(registry, "ssh_session", "bob", "web1")
    ended.conn(registry, "ssh_session", "carol", "db1")
    await watcher.enforce([make_lock("n", node="web1")])
    assert sorted(who for who, _ in ended.log) == ["ssh_session:alice", "ssh_session:bob"]


def test_split_by_side() -> None:
    conns = [
        LiveConnection(kind=k, identity=ident("a"), target="t")
        for k in ("ssh", "tunnel", "ssh_session")
    ]
    first, last = split_by_side(conns)
    assert [c.kind for c in first] == ["ssh_session"]
    assert [c.kind for c in last] == ["ssh", "tunnel"]


async def test_backend_feed_enforces_within_the_poll(setup: Any) -> None:
    watcher, registry, ended, _, _ = setup
    backend = MemoryBackend(sweep_interval=None)
    ended.conn(registry, "ssh_session", "alice")
    await watcher.load(backend)
    assert watcher.view.healthy and watcher.view.locks == ()
    task = asyncio.get_running_loop().create_task(watcher.run_backend(backend))
    try:
        await asyncio.sleep(0)
        lock = make_lock("l1", "bye", user="alice")
        data = lock.model_dump(mode="json")
        await backend.put(Item(key="locks/l1", value=json.dumps(data).encode()))
        async with asyncio.timeout(2):
            await ended.event.wait()
        assert ended.log == [("ssh_session:alice", "locked: bye")]
        assert not watcher.check(identity_targets(ident("alice")), "best_effort").allowed
        await backend.delete("locks/l1")
        async with asyncio.timeout(2):
            while watcher.view.locks:
                await asyncio.sleep(0)  # yield; no real time passes
        assert watcher.check(identity_targets(ident("alice")), "best_effort").allowed
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await watcher.close()


async def test_cache_feed_enforces_and_tracks_health(setup: Any) -> None:
    watcher, registry, ended, _, clock = setup
    cache = ResourceCache()
    watcher.follow_cache(cache)
    ended.conn(registry, "ssh_session", "alice")
    cache.begin_snapshot()
    cache.apply({"type": "init"})
    assert watcher.view.healthy
    lock = make_lock("l1", "stolen", device="", user="alice")
    cache.apply({"type": "put", "kind": "lock", "resource": resource_to_dict(lock)})
    async with asyncio.timeout(2):
        await ended.event.wait()
    assert ended.log == [("ssh_session:alice", "locked: stolen")]
    cache.reset()  # the stream broke
    bob = identity_targets(ident("bob"))
    assert not watcher.check(bob, "strict").allowed
    assert watcher.check(bob, "best_effort").allowed
    cache.begin_snapshot()
    cache.apply({"type": "init"})
    assert watcher.check(bob, "strict").allowed
    clock.advance(timedelta(seconds=31))
    assert watcher.check(bob, "strict").reason.startswith("lock state unknown")
    cache.apply({"type": "ping"})
    assert watcher.check(bob, "strict").allowed
    await watcher.close()


async def test_cluster_mode_and_role_mode(setup: Any) -> None:
    _, registry, ended, audit, clock = setup

    async def roles(names: Any) -> list[Role]:
        strict = RoleSpec(options=RoleOptions(lock_mode="strict"))
        return [
            Role(metadata=Metadata(name=n), spec=strict if n == "prod" else RoleSpec())
            for n in names
        ]

    watcher = LockWatcher(clock=clock, audit=audit, registry=registry, roles=roles, grace=0)
    assert await watcher.mode_for(ident("a", ("dev",))) == "best_effort"
    assert await watcher.mode_for(ident("a", ("dev", "prod"))) == "strict"
    watcher.cluster_mode = "strict"
    assert await watcher.mode_for(ident("a", ("dev",))) == "strict"
    watcher.cluster_mode = "best_effort"
    # Strict identities lose live access once the state is unknown for too long.
    watcher.mark(True)
    registry.add(LiveConnection(kind="ssh_session", identity=ident("p", ("prod",)), target="w"))
    entry = registry.find(lambda c: True)[0]
    reasons: list[str] = []

    async def terminate(reason: str) -> None:
        reasons.append(reason)

    entry.terminate = terminate
    ended.conn(registry, "ssh_session", "relaxed")
    watcher.mark(False)
    assert await watcher.enforce_unknown_state() == []  # a short hiccup ends nothing
    clock.advance(timedelta(seconds=31))
    assert [c.identity.user for c in await watcher.enforce_unknown_state()] == ["p"]
    assert reasons and reasons[0].startswith("lock state unknown")
    assert ended.log == []


def test_replace_reports_new_and_changed(setup: Any) -> None:
    watcher = setup[0]
    a, b = make_lock("a", user="x"), make_lock("b", user="y")
    assert watcher.replace([a]) == [a]
    assert watcher.replace([a, b]) == [b]
    assert watcher.replace([a, make_lock("b", "new", user="y")])[0].spec.message == "new"
    assert not watcher.check(LockTargets(user="x"), "best_effort").allowed


async def test_watcher_tracks_the_cluster_require_session_mfa(setup: Any) -> None:
    from bastion.locks.watcher import PREFS_KEY
    from bastion.types.access import AuthPreference, AuthPreferenceSpec

    watcher = setup[0]
    pref = AuthPreference(
        metadata=Metadata(name=AuthPreference.NAME),
        spec=AuthPreferenceSpec(require_session_mfa=True),
    )
    backend = MemoryBackend(sweep_interval=None)
    await backend.put(Item(key=PREFS_KEY, value=pref.model_dump_json().encode()))
    assert watcher.cluster_session_mfa is False
    await watcher.load(backend)
    assert watcher.cluster_session_mfa is True
    # a remote node's watch-fed cache carries it too
    remote = LockWatcher(clock=FakeClock(), audit=setup[3], registry=LiveRegistry())
    cache = ResourceCache()
    remote.follow_cache(cache)
    cache.begin_snapshot()
    cache.apply(
        {"type": "put", "kind": "cluster_auth_preference", "resource": resource_to_dict(pref)}
    )
    cache.apply({"type": "init"})
    assert remote.cluster_session_mfa is True
    pref.spec.require_session_mfa = False
    cache.apply(
        {"type": "put", "kind": "cluster_auth_preference", "resource": resource_to_dict(pref)}
    )
    assert remote.cluster_session_mfa is False
    await watcher.close()
    await remote.close()
