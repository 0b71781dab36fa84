"""A watcher-fed read replica of resources: ``apply()`` is pure (state x event -> state).

Agents keep roles and locks current through ``GET /v1/watch`` (see auth/api_agents.py); the same
cache serves in-process readers. ``synced`` is false until the snapshot is complete and again after
the stream breaks, so strict lock mode can refuse while the state is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import ConnectionProblem, RemoteProtocolError
from bastion.services.store import Lookup
from bastion.types.access import Role
from bastion.types.codec import parse_resource
from bastion.types.meta import Resource

__all__ = ["CacheState", "ResourceCache", "StoreRoleSource", "apply"]


@dataclass(frozen=True, slots=True)
class CacheState:
    resources: dict[str, dict[str, Resource]] = field(default_factory=dict)
    """kind -> name -> resource."""
    synced: bool = False


def apply(state: CacheState, line: dict[str, Any]) -> CacheState:
    """Apply one watch line (``put``, ``delete``, ``init``, ``ping``) and return the new state.

    Raises:
        RemoteProtocolError: a malformed line.
    """
    kind_of = line.get("type")
    if kind_of == "ping":
        return state
    if kind_of == "init":
        return CacheState(state.resources, synced=True)
    kind = line.get("kind")
    if not isinstance(kind, str):
        raise RemoteProtocolError(f"watch line without kind: {line!r}")
    per_kind = dict(state.resources.get(kind, {}))
    if kind_of == "put":
        resource = parse_resource(line.get("resource"))
        per_kind[resource.name] = resource
    elif kind_of == "delete":
        per_kind.pop(str(line.get("name")), None)
    else:
        raise RemoteProtocolError(f"unknown watch line type {kind_of!r}")
    return CacheState({**state.resources, kind: per_kind}, state.synced)


class ResourceCache:
    """Mutable holder of a CacheState; also a RoleSource for the agents."""

    def __init__(self) -> None:
        self.state = CacheState()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called after every change with the line applied (``{"type": "reset"}`` when the
        stream breaks); they must not block (the lock watcher spawns its work)."""

    def _notify(self, line: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(line)

    def apply(self, line: dict[str, Any]) -> None:
        self.state = apply(self.state, line)
        self._notify(line)

    def reset(self) -> None:
        """The stream broke: keep the data but mark it unsynced until the next snapshot."""
        self.state = CacheState(self.state.resources, synced=False)
        self._notify({"type": "reset"})

    def begin_snapshot(self) -> None:
        self.state = CacheState()

    def items(self, kind: str) -> list[Resource]:
        return list(self.state.resources.get(kind, {}).values())

    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        if not self.state.synced and not self.state.resources:
            raise ConnectionProblem("roles are not known yet: the agent has not synced with auth")
        roles = self.state.resources.get("role", {})
        return [r for n in names if isinstance(r := roles.get(n), Role)]


class StoreRoleSource:
    """RoleSource of the auth process: its role store, or that store's watched copy
    (:class:`~bastion.services.watched.WatchedStore`, read-only roles)."""

    def __init__(self, roles: Lookup[Role]) -> None:
        self._roles = roles

    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        from bastion.errors import NotFound

        out = []
        for name in names:
            try:
                out.append(await self._roles.get(name))
            except NotFound:
                continue
        return out
