"""The Emitter protocol: what components that produce audit events depend on.

The auth server's :class:`bastion.audit.log.AuditLog` is one; agents that run away from auth use
an emitter that posts to the auth API and retries (nothing is dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from bastion.types.audit import AuditEvent

__all__ = ["Emitter", "SessionEvents"]


class Emitter(Protocol):
    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        """Record one event; known attributes (user, login, target, remote_addr, session_id,
        reason, ...) go to the top level, the rest to ``fields``."""
        ...


class SessionEvents:
    """The events of one session that share attributes (``shared``: user, session id, the
    target), through whatever emitter the route has: the audit log's bulk writer (the shared
    part encoded once per session), ``emit_many`` of whole events, or one ``emit`` each (a
    proxy in its own process). Used by the database and app routes' session writers.

    After :meth:`append`, :attr:`stored` says how many of its events are stored: all of them,
    or, when it raised, those that went before the failure (the caller retries the rest)."""

    def __init__(
        self,
        audit: Emitter,
        event_type: str,
        shared: Mapping[str, object],
        outcome: str = "success",
    ) -> None:
        self._audit = audit
        self._type = event_type
        self._outcome = outcome
        self._shared = dict(shared)
        bulk = getattr(audit, "bulk", None)
        self._bulk = bulk(event_type, outcome=outcome, **self._shared) if bulk is not None else None
        self._many = getattr(audit, "emit_many", None)
        self.stored = 0

    async def append(self, owns: Sequence[Mapping[str, object]]) -> None:
        """Store one event per mapping of ``owns`` (its own fields beside the shared ones)."""
        self.stored = 0
        if self._bulk is not None:
            await self._bulk.append(owns)
        elif self._many is not None:
            shared = self._shared
            await self._many([(self._type, self._outcome, {**shared, **own}) for own in owns])
        else:
            for own in owns:
                fields = {**self._shared, **own}
                await self._audit.emit(self._type, outcome=self._outcome, **fields)
                self.stored += 1
            return
        self.stored = len(owns)
