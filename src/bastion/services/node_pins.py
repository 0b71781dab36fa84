"""Which host serves each node name: pinned at first sight, changed only by an admin.

Layer: services (typed store; no RBAC). A node's name is bound to a live host while its
heartbeats continue, but once the record expires another host may join under the same name and
report its own labels. The pin remembers the host id the name belonged to, so the proxy treats a
record whose host id changed as a different node and refuses it until an admin confirms the new
host (``bctl nodes confirm NAME``), as OpenSSH's known_hosts refuses a changed host key.

Keys: ``node_pins/<name>`` -> the host id (no TTL).
"""

from __future__ import annotations

from bastion.backend.base import Backend, Item
from bastion.errors import AlreadyExists, NotFound

__all__ = ["PREFIX", "NodePins"]

PREFIX = "node_pins/"


class NodePins:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def get(self, name: str) -> str | None:
        """The pinned host id, or None when the name was never pinned."""
        try:
            return (await self._backend.get(PREFIX + name)).value.decode()
        except NotFound:
            return None

    async def pin(self, name: str, host_id: str) -> str:
        """Pin ``name`` to ``host_id`` unless it is pinned already; returns the pinned host id
        (the earlier one when there is one: first sight wins, races included)."""
        try:
            await self._backend.create(Item(key=PREFIX + name, value=host_id.encode()))
        except AlreadyExists:
            pinned = await self.get(name)
            return host_id if pinned is None else pinned
        return host_id

    async def confirm(self, name: str, host_id: str) -> None:
        """An admin accepts ``host_id`` as the host of ``name`` from now on."""
        await self._backend.put(Item(key=PREFIX + name, value=host_id.encode()))

    async def forget(self, name: str) -> None:
        try:
            await self._backend.delete(PREFIX + name)
        except NotFound:
            pass
