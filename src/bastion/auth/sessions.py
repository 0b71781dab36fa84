"""Live sessions in auth: what nodes report, and which of them a user may see.

Layer: auth (domain). Nodes report their shared sessions (:mod:`bastion.agent.session_join`);
a host identity writes only trackers of its own host id. A user sees a live session when it is
theirs or when :func:`bastion.rbac.moderation.join_modes` gives them a mode (the same decision
the node makes when they join), so a user who may not join a session never learns it exists.
Trackers expire on their own; their writes are not audited changes (see
:mod:`bastion.services.sessions`).
"""

from __future__ import annotations

from datetime import timedelta

from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, NotFound
from bastion.rbac.moderation import join_modes
from bastion.services.sessions import tracker_store
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.sessions import JOIN_MODES, JoinMode, SessionTracker

__all__ = ["InProcessTrackers", "SessionTrackerService", "VisibleSession"]

MAX_TRACKER_TTL = timedelta(minutes=5)
"""The longest a tracker lives without a refresh, whatever the node asks."""

VisibleSession = tuple[SessionTracker, tuple[JoinMode, ...]]
"""A tracker and the modes in which the caller may join it."""


class SessionTrackerService:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self.store = tracker_store(auth.deps.backend)

    async def report(self, host: Identity, tracker: SessionTracker) -> None:
        """Store a node's tracker (expiry capped).

        Raises:
            AccessDenied: not a node identity, or the tracker is another host's.
        """
        if host.kind != "host" or "node" not in host.roles or not host.host_id:
            raise AccessDenied("access denied: sessions are reported by node agents")
        if tracker.spec.host_id != host.host_id:
            raise AccessDenied("a node reports only its own sessions")
        try:
            existing = await self.store.get(tracker.name)
        except NotFound:
            existing = None
        if existing is not None and existing.spec.host_id != host.host_id:
            raise AccessDenied("a node reports only its own sessions")
        latest = self.auth.clock.now() + MAX_TRACKER_TTL
        tracker = tracker.model_copy(deep=True)
        expires = tracker.metadata.expires
        tracker.metadata.expires = min(expires, latest) if expires else latest
        tracker.metadata.revision = ""
        await self.store.upsert(tracker)

    async def forget(self, host: Identity, session_id: str) -> None:
        """Remove a tracker of this host (a missing one is fine).

        Raises:
            AccessDenied: the tracker is another host's.
        """
        try:
            existing = await self.store.get(session_id)
        except NotFound:
            return
        if existing.spec.host_id != host.host_id:
            raise AccessDenied("a node reports only its own sessions")
        try:
            await self.store.delete(session_id)
        except NotFound:
            return

    async def _roles(self, names: tuple[str, ...] | list[str]) -> list[Role]:
        out = []
        for name in names:
            try:
                out.append(await self.auth.roles.get(name))
            except NotFound:
                continue  # a deleted role grants nothing
        return out

    def _visible(
        self, identity: Identity, roles: list[Role], tracker: SessionTracker
    ) -> VisibleSession | None:
        spec = tracker.spec
        modes = join_modes(identity.user, roles, spec.owner, spec.owner_roles, spec.kind)
        if identity.user != spec.owner and not modes:
            return None
        return tracker, tuple(m for m in JOIN_MODES if m in modes)

    async def list(self, identity: Identity) -> list[VisibleSession]:
        """Live sessions ``identity`` may see, oldest first."""
        roles = await self._roles(identity.roles)
        now = self.auth.clock.now()
        out = []
        for tracker in await self.store.list():
            if tracker.metadata.expires is not None and tracker.metadata.expires <= now:
                continue
            seen = self._visible(identity, roles, tracker)
            if seen is not None:
                out.append(seen)
        return sorted(out, key=lambda s: (s[0].spec.started is None, s[0].spec.started or now))

    async def get(self, identity: Identity, session_id: str) -> VisibleSession:
        """Raises: NotFound when there is no such session or the caller may not see it."""
        try:
            tracker = await self.store.get(session_id)
        except NotFound:
            tracker = None
        seen = None
        if tracker is not None:
            seen = self._visible(identity, await self._roles(identity.roles), tracker)
        if seen is None:
            raise NotFound(f"session {session_id} not found")
        return seen


class InProcessTrackers:
    """The all-in-one node's tracker reporter: the service in the same process."""

    def __init__(self, service: SessionTrackerService, host: Identity) -> None:
        self._service = service
        self._host = host

    async def report(self, tracker: SessionTracker) -> None:
        await self._service.report(self._host, tracker)

    async def forget(self, session_id: str) -> None:
        await self._service.forget(self._host, session_id)
