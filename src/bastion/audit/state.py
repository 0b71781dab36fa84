"""Stored resources against the audit log: every resource must match the event of its latest write.

Layer: audit (reads the backend; the key prefixes come from :mod:`bastion.services.store`).
Changes are stored together with their event (:meth:`bastion.audit.log.AuditLog.commit_change`),
which records each key it wrote and the SHA-256 of the stored value (``fields.changes``). So in an
untouched cluster, for every key under an audited prefix, the newest event that names the key
holds the hash of exactly the value stored now. A resource without such an event was written
behind the log's back: by a direct edit of the database, by a version of Bastion that did not yet
record changes, or by a bug. Node heartbeats (items with an expiry under
:data:`~bastion.services.store.HEARTBEAT_PREFIXES`) are not audited changes and are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bastion.audit.findings import Finding
from bastion.audit.log import state_sha256
from bastion.backend.base import Backend, Item
from bastion.errors import NotFound
from bastion.services.store import HEARTBEAT_PREFIXES, audited_prefixes

__all__ = ["LatestWrites", "Written", "events_without_state", "unaudited_state"]

_MARK = b'"changes"'


@dataclass(frozen=True, slots=True)
class Written:
    """The newest event that wrote a key."""

    index: int
    op: str
    """``create``, ``put``, ``update`` or ``delete``."""
    sha256: str
    """Hex SHA-256 of the value it stored (empty for a delete)."""


@dataclass(slots=True)
class LatestWrites:
    """Fed every stored event (in any order): keeps, per key, the newest event that wrote it."""

    by_key: dict[str, Written] = field(default_factory=dict)

    def feed(self, index: int, value: bytes) -> None:
        if _MARK not in value:  # cheap test first: most events change no state
            return
        try:
            body = json.loads(value)
        except ValueError:
            return  # an unreadable event is reported by the tree checks
        fields = body.get("fields") if isinstance(body, dict) else None
        changes = fields.get("changes") if isinstance(fields, dict) else None
        if not isinstance(changes, list):
            return
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("key"), str):
                continue
            key = change["key"]
            previous = self.by_key.get(key)
            if previous is None or previous.index < index:
                op, sha = str(change.get("op", "")), str(change.get("state_sha256", ""))
                self.by_key[key] = Written(index, op, sha)


def _heartbeat(item: Item) -> bool:
    return item.expires is not None and item.key.startswith(HEARTBEAT_PREFIXES)


def _problem(item: Item, written: Written | None) -> str:
    """Why ``item`` does not match its newest event ("" when it does)."""
    sha = state_sha256(item.value)
    where = f"{item.key} (revision {item.revision}, sha256 {sha[:16]})"
    if written is None:
        return (
            f"{where} has no audit event: it was written behind the log's back (a direct edit "
            "of the database, or a change made before Bastion recorded changes with their event)"
        )
    if written.op == "delete":
        return f"{where} is stored, but its latest event (index {written.index}) deleted it"
    if written.sha256 != sha:
        return (
            f"{where} differs from the state its latest event (index {written.index}, sha256 "
            f"{written.sha256[:16]}) wrote: it was changed behind the log's back"
        )
    return ""


async def unaudited_state(backend: Backend, latest: LatestWrites) -> tuple[int, list[Finding]]:
    """Check every stored resource against ``latest``.

    Returns:
        How many resources were checked, and one ``unaudited`` finding per resource whose
        current value is not what the newest event naming its key wrote.
    """
    checked, findings = 0, []
    for prefix in audited_prefixes():
        for item in await backend.get_range(prefix):
            if _heartbeat(item):
                continue
            checked += 1
            message = _problem(item, latest.by_key.get(item.key))
            if message:
                findings.append(Finding("unaudited", message, key=item.key))
    return checked, findings


async def events_without_state(backend: Backend, latest: LatestWrites) -> list[str]:
    """The other direction, for tests and diagnosis: keys whose newest event's write is not
    what is stored (a write event for a key that is absent or holds other bytes, or a delete
    event for a key that is present). Items that expire make this normal in a live cluster
    (join tokens, invites), so ``verify`` does not report it."""
    problems = []
    for key, written in sorted(latest.by_key.items()):
        try:
            item: Item | None = await backend.get(key)
        except NotFound:
            item = None
        if written.op == "delete":
            if item is not None:
                problems.append(f"{key}: deleted by event {written.index}, but stored")
        elif item is None:
            problems.append(f"{key}: written by event {written.index}, but not stored")
        elif state_sha256(item.value) != written.sha256:
            problems.append(f"{key}: stored value differs from event {written.index}")
    return problems
