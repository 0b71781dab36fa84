"""Keep the lock state current and cut live access the moment a lock arrives.

Layer: IO shell around :mod:`bastion.locks.matcher`. A :class:`LockWatcher` holds one process's
view of the locks and is fed by either

* :meth:`LockWatcher.run_backend`: an in-process watch of the backend's ``locks/`` prefix (the
  auth process: its proxy and its local node), re-read every ``refresh`` seconds so that the
  view's freshness is known; or
* :meth:`LockWatcher.follow_cache`: a remote node's :class:`~bastion.services.cache.ResourceCache`,
  fed by the streaming ``GET /v1/watch`` (its pings keep the view fresh).

On every lock put it ends each matching connection of the
:class:`~bastion.live.registry.LiveRegistry` concurrently: agent-side connections first (they can
show the user the lock message), then, after a short grace (:data:`AGENT_FIRST_GRACE`), the
proxy's raw relays and tunnels. Each ending is audited as ``session.terminated`` with the lock's
name (an SSH session on a node audits its own). In strict mode, a view that stays unknown past
``max_staleness`` ends the connections of strict identities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from bastion.audit.emitter import Emitter
from bastion.backend.base import Backend, EventType, Item
from bastion.clock import Clock
from bastion.errors import BastionError
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import (
    DEFAULT_MAX_STALENESS,
    LockDecision,
    LockMode,
    LockTargets,
    LockView,
    decide,
    effective_mode,
    identity_targets,
    matching_locks,
)
from bastion.rbac.checker import RoleSet
from bastion.services.cache import ResourceCache
from bastion.services.store import RESOURCE_PREFIXES
from bastion.tasks import TaskSet
from bastion.types.access import AuthPreference, Lock, Role
from bastion.types.devices import DeviceTrustMode
from bastion.types.identity import Identity

__all__ = [
    "AGENT_FIRST_GRACE",
    "LOCK_PREFIX",
    "LockWatcher",
    "RoleLookup",
    "connection_targets",
    "split_by_side",
]

log = structlog.get_logger("bastion.locks")

LOCK_PREFIX = RESOURCE_PREFIXES["lock"] + "/"
"""Where locks are stored (:data:`bastion.services.store.RESOURCE_PREFIXES`, the one home)."""
PREFS_KEY = "cluster_config/" + AuthPreference.NAME
"""Where the cluster auth preference (its ``lock_mode``) is stored."""
PROXY_KINDS = frozenset({"ssh", "tunnel"})
"""Connections the proxy holds as raw relays: ending them first would hide the node's message."""
AGENT_FIRST_GRACE = 0.5
"""Seconds between ending agent-side connections and the proxy's relays of the same access
(a remote node gets the lock through its own watch, typically within 100 ms)."""

RoleLookup = Callable[[Sequence[str]], Awaitable[list[Role]]]


def connection_targets(conn: LiveConnection) -> LockTargets:
    """Lock targets of one live connection (its identity, login, node and session)."""
    nodes = (conn.target, conn.extra.get("host_id", ""), conn.extra.get("node", ""))
    return identity_targets(conn.identity, login=conn.login, nodes=nodes, session=conn.session_id)


def split_by_side(
    conns: Iterable[LiveConnection],
) -> tuple[list[LiveConnection], list[LiveConnection]]:
    """(agent-side connections, proxy relays and tunnels): the order they are ended in."""
    first: list[LiveConnection] = []
    last: list[LiveConnection] = []
    for conn in conns:
        (last if conn.kind in PROXY_KINDS else first).append(conn)
    return first, last


def _decode(item: Item) -> Lock | None:
    try:
        lock = Lock.model_validate_json(item.value)
    except ValidationError:
        log.error("stored lock is corrupt; ignored", key=item.key)
        return None
    lock.metadata.revision = str(item.revision)
    return lock


class LockWatcher:
    """One process's lock state, the checks over it, and live enforcement.

    Args:
        clock: the time source.
        audit: where terminations are recorded.
        registry: the live connections to end.
        roles: role definitions (to know which identities are in strict mode); None: the
            roles' ``lock_mode`` is not consulted (only the cluster default).
        max_staleness: how old the view may be before strict mode refuses.
        grace: seconds between ending agent-side and proxy-side connections.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        audit: Emitter,
        registry: LiveRegistry,
        roles: RoleLookup | None = None,
        max_staleness: timedelta = DEFAULT_MAX_STALENESS,
        grace: float = AGENT_FIRST_GRACE,
    ) -> None:
        self._clock = clock
        self._audit = audit
        self._registry = registry
        self._roles = roles
        self.max_staleness = max_staleness
        self._grace = grace
        self._locks: dict[str, Lock] = {}
        self._healthy = False
        self._synced_at: datetime | None = None
        self.cluster_mode: LockMode = "best_effort"
        self.cluster_session_mfa = False
        """The auth preference's ``require_session_mfa`` (the watch carries the preference)."""
        self.cluster_time_zone = "UTC"
        """The auth preference's ``time_zone`` (role conditions read ``request.time`` in it)."""
        self.cluster_device_mode: DeviceTrustMode = "off"
        """The auth preference's ``device_trust.mode`` (nodes refuse certificates without a
        trusted device when it, or a role, says ``required``)."""
        self._tasks = TaskSet()

    # ---- the view ------------------------------------------------------------------------------

    @property
    def view(self) -> LockView:
        return LockView(tuple(self._locks.values()), self._healthy, self._synced_at)

    def replace(self, locks: Iterable[Lock], *, healthy: bool = True) -> list[Lock]:
        """Take a full snapshot; returns the locks that are new or changed (to enforce)."""
        fresh = {lock.name: lock for lock in locks}
        changed = [lock for name, lock in fresh.items() if self._locks.get(name) != lock]
        self._locks = fresh
        self.mark(healthy)
        return changed

    def put(self, lock: Lock) -> None:
        self._locks[lock.name] = lock

    def delete(self, name: str) -> None:
        self._locks.pop(name, None)

    def mark(self, healthy: bool) -> None:
        """Record the watch's health; a healthy mark also means "current as of now"."""
        self._healthy = healthy
        if healthy:
            self._synced_at = self._clock.now()

    # ---- decisions -----------------------------------------------------------------------------

    async def mode_for(self, identity: Identity) -> LockMode:
        """Strict when the cluster default or any of the identity's roles says so."""
        if self.cluster_mode == "strict" or self._roles is None or identity.kind == "host":
            return self.cluster_mode
        try:
            roles = await self._roles(identity.roles)
        except BastionError:
            return "strict"  # roles unknown: fail closed
        return effective_mode(RoleSet.from_roles(roles, identity.traits).options().lock_mode, "")

    def check(self, targets: LockTargets, mode: str) -> LockDecision:
        return decide(self.view, targets, mode, self._clock.now(), self.max_staleness)

    async def check_access(self, identity: Identity, targets: LockTargets) -> LockDecision:
        """The decision for a new access by ``identity`` (its lock mode looked up)."""
        return self.check(targets, await self.mode_for(identity))

    # ---- live enforcement ----------------------------------------------------------------------

    async def enforce(self, locks: Sequence[Lock]) -> list[LiveConnection]:
        """End every live connection that one of ``locks`` matches; returns them."""
        now = self._clock.now()
        matched: dict[int, tuple[LiveConnection, Lock]] = {}
        for conn in self._registry:
            found = matching_locks(locks, connection_targets(conn), now)
            if found:
                matched[conn.id] = (conn, found[0])
        if not matched:
            return []
        first, last = split_by_side(conn for conn, _ in matched.values())
        await self._end_all(first, matched)
        if last:
            # Give agents (here, or a remote node receiving the same lock through its watch)
            # the moment they need to show the user why, before the raw relay goes.
            await asyncio.sleep(self._grace)
            await self._end_all(last, matched)
        return [conn for conn, _ in matched.values()]

    async def _end_all(
        self, conns: Sequence[LiveConnection], why: dict[int, tuple[LiveConnection, Lock]]
    ) -> None:
        async with asyncio.TaskGroup() as group:
            for conn in conns:
                lock = why[conn.id][1]
                group.create_task(self._end(conn, lock), name=f"lock-end-{conn.id}")

    async def _end(self, conn: LiveConnection, lock: Lock) -> None:
        reason = f"locked: {lock.spec.message}" if lock.spec.message else f"locked by {lock.name}"
        await self._end_with(conn, reason, lock.name)

    async def _end_with(self, conn: LiveConnection, reason: str, lock_name: str) -> None:
        try:
            if conn.terminate is not None:
                await conn.terminate(reason)
        except (BastionError, OSError) as exc:
            log.warning("could not end a locked connection", conn=conn.id, error=str(exc))
        log.info("lock ended a connection", kind=conn.kind, user=conn.identity.user, lock=lock_name)
        if conn.kind == "ssh_session":
            return  # the session audits its own session.terminated (with this reason)
        await self._audit.emit(
            "session.terminated",
            outcome="failure",
            user=conn.identity.user,
            login=conn.login,
            target=conn.target,
            remote_addr=conn.remote_addr,
            session_id=conn.session_id,
            reason=reason,
            lock=lock_name,
            kind=conn.kind,
        )

    async def enforce_unknown_state(self) -> list[LiveConnection]:
        """Strict mode: end the connections of strict identities while the state is unknown."""
        now = self._clock.now()
        if self._synced_at is not None and now - self._synced_at <= self.max_staleness:
            return []  # a short watch hiccup refuses new access only
        # The view's real health picks the reason: "not connected" vs "not refreshed for ...".
        view = LockView(healthy=self._healthy, synced_at=self._synced_at)
        reason = decide(view, LockTargets(), "strict", now, self.max_staleness).reason
        ended = []
        for conn in self._registry:
            if conn.kind == "tunnel" or await self.mode_for(conn.identity) != "strict":
                continue
            ended.append(conn)
        async with asyncio.TaskGroup() as group:
            for conn in ended:
                group.create_task(self._end_with(conn, reason, ""), name="lock-unknown")
        return ended

    # ---- feeds ---------------------------------------------------------------------------------

    async def run_backend(self, backend: Backend, refresh: float = 10.0) -> None:
        """Follow ``locks/`` in the backend; never returns (cancel it)."""
        delay = 0.2
        while True:
            try:
                await self._follow_backend(backend, refresh)
            except (BastionError, OSError, StopAsyncIteration) as exc:
                log.warning("lock watch interrupted; reconnecting", error=str(exc) or repr(exc))
            self.mark(False)
            await self.enforce_unknown_state()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _follow_backend(self, backend: Backend, refresh: float) -> None:
        watcher = await backend.watch((LOCK_PREFIX, PREFS_KEY))
        try:
            await self._snapshot(backend)
            events = aiter(watcher)
            while True:
                try:
                    async with asyncio.timeout(refresh):
                        event = await anext(events)
                except TimeoutError:
                    await self._snapshot(backend)
                    continue
                if not event.item.key.startswith(LOCK_PREFIX):
                    if event.type is EventType.PUT:
                        self._take_prefs(event.item)
                    continue
                name = event.item.key[len(LOCK_PREFIX) :]
                if event.type is EventType.DELETE:
                    self.delete(name)
                    continue
                lock = _decode(event.item)
                if lock is not None:
                    self.put(lock)
                    self.mark(True)
                    await self.enforce([lock])
        finally:
            await watcher.close()

    async def load(self, backend: Backend) -> None:
        """Read the current locks once (before serving, so no access slips through at start)."""
        await self._snapshot(backend)

    async def _snapshot(self, backend: Backend) -> None:
        items = await backend.get_range(LOCK_PREFIX)
        changed = self.replace(lock for item in items if (lock := _decode(item)) is not None)
        for item in await backend.get_range(PREFS_KEY):
            self._take_prefs(item)
        await self.enforce(changed)  # locks created while the watch was down

    def _take_prefs(self, item: Item) -> None:
        try:
            spec = AuthPreference.model_validate_json(item.value).spec
            self.cluster_mode, self.cluster_session_mfa = spec.lock_mode, spec.require_session_mfa
            self.cluster_time_zone = spec.time_zone
            self.cluster_device_mode = spec.device_trust.mode
        except ValidationError:
            log.error("stored cluster auth preference is corrupt", key=item.key)

    def follow_cache(self, cache: ResourceCache) -> None:
        """Mirror a remote node's watch-fed cache; enforce each lock as it arrives."""

        def on_line(line: dict[str, Any]) -> None:
            synced = cache.state.synced
            locks = [r for r in cache.items("lock") if isinstance(r, Lock)]
            self._locks = {lock.name: lock for lock in locks}
            prefs = [r for r in cache.items("cluster_auth_preference")]
            if prefs and isinstance(prefs[0], AuthPreference):
                self.cluster_mode = prefs[0].spec.lock_mode
                self.cluster_session_mfa = prefs[0].spec.require_session_mfa
                self.cluster_time_zone = prefs[0].spec.time_zone
                self.cluster_device_mode = prefs[0].spec.device_trust.mode
            self.mark(synced)
            if line.get("type") == "put" and line.get("kind") == "lock" and synced:
                name = str((line.get("resource") or {}).get("metadata", {}).get("name", ""))
                lock = self._locks.get(name)
                if lock is not None:
                    self._tasks.spawn(self._enforce_logged([lock]), name="lock-enforce")
            elif line.get("type") == "init":
                self._tasks.spawn(self._enforce_logged(locks), name="lock-enforce")

        cache.listeners.append(on_line)

    async def _enforce_logged(self, locks: Sequence[Lock]) -> None:
        ended = await self.enforce(locks)
        if ended:
            log.info("locks enforced", ended=len(ended))

    async def watch_staleness(self, interval: float = 1.0) -> None:
        """Strict mode for a cache-fed view: end strict access once the view is unknown."""
        while True:
            await asyncio.sleep(interval)
            await self.enforce_unknown_state()

    async def close(self) -> None:
        await self._tasks.cancel_all()
