"""The append-only audit log, stored through the backend.

Events are written with ``create`` under ``audit/events/<time-ordered id>`` and never updated or
deleted through this API, so the tamper-evident log (Merkle tree over the same sequence) can sit on
top of it. Emitting never raises into the caller's control flow silently: a failure to record an
event is an error of the action itself (no dropped audit event).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

import structlog

from bastion.backend.base import Backend, Item
from bastion.clock import Clock
from bastion.errors import AlreadyExists
from bastion.types.audit import AuditEvent, event_code

__all__ = ["AuditLog", "AuditQuery"]

PREFIX = "audit/events/"
log = structlog.get_logger("bastion.audit")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    types: tuple[str, ...] = ()
    """Match event types exactly or by prefix ending in ``.`` / ``*`` (``user.*``)."""
    user: str = ""
    since: datetime | None = None
    until: datetime | None = None
    outcome: str = ""
    limit: int = 1000

    def matches(self, event: AuditEvent) -> bool:
        if self.types and not any(_type_matches(t, event.type) for t in self.types):
            return False
        if self.user and event.user != self.user:
            return False
        if self.since and event.time < self.since:
            return False
        if self.until and event.time > self.until:
            return False
        return not (self.outcome and event.outcome != self.outcome)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class AuditLog:
    def __init__(self, backend: Backend, clock: Clock, cluster: str) -> None:
        self._backend = backend
        self._clock = clock
        self._cluster = cluster

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent:
        """Record one event. Known attributes go to the top level, the rest to ``fields``."""
        top = {k: v for k, v in fields.items() if k in AuditEvent.model_fields and v is not None}
        extra = {k: v for k, v in fields.items() if k not in AuditEvent.model_fields}
        now = self._clock.now()
        for _ in range(5):
            event_id = f"{int(now.timestamp() * 1e9):020d}-{secrets.token_hex(4)}"
            event = AuditEvent(
                type=event_type,
                code=event_code(event_type, outcome),
                time=now,
                cluster=self._cluster,
                outcome=outcome,
                fields=extra,
                id=event_id,
                **top,
            )
            try:
                await self._backend.create(
                    Item(key=PREFIX + event_id, value=event.model_dump_json().encode())
                )
            except AlreadyExists:
                continue
            log.info("audit", type=event_type, outcome=outcome, user=event.user, code=event.code)
            return event
        raise AlreadyExists("could not allocate a unique audit event id")

    async def search(self, query: AuditQuery) -> list[AuditEvent]:
        """Events matching ``query``, oldest first, at most ``query.limit``."""
        out: list[AuditEvent] = []
        # Revision order is append order (the key's time part may tie under a frozen clock).
        items = sorted(await self._backend.get_range(PREFIX), key=lambda i: i.revision)
        for item in items:
            event = AuditEvent.model_validate(json.loads(item.value))
            if query.matches(event):
                out.append(event)
        return out[-query.limit :] if query.limit else out
