"""The Emitter protocol: what components that produce audit events depend on.

The auth server's :class:`bastion.audit.log.AuditLog` is one; agents that run away from auth use
an emitter that posts to the auth API and retries (nothing is dropped).
"""

from __future__ import annotations

from typing import Protocol

from bastion.types.audit import AuditEvent

__all__ = ["Emitter"]


class Emitter(Protocol):
    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        """Record one event; known attributes (user, login, target, remote_addr, session_id,
        reason, ...) go to the top level, the rest to ``fields``."""
        ...
