"""Shared builders for the export tests (imported as a module; see conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.types.audit import AuditEvent

T0 = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)


def make_event(n: int, outcome: str = "success", **kw: Any) -> AuditEvent:
    """Event number ``n`` (id derived from n) with sensible defaults."""
    base: dict[str, Any] = {
        "type": "user.login",
        "code": "T1000I" if outcome == "success" else "T1000W",
        "time": T0 + timedelta(seconds=n),
        "cluster": "example",
        "user": f"user{n}",
        "outcome": outcome,
        "id": f"{n:020d}-abcd",
        "fields": {"n": n},
    }
    base.update(kw)
    if "index" in AuditEvent.model_fields and "index" not in kw:
        base["index"] = n
    return AuditEvent(**base)


class ListSource:
    """An in-memory event source with the log's read_from contract (tests only)."""

    def __init__(self, events: list[AuditEvent] | None = None) -> None:
        self.events = list(events or [])
        self.reads: list[tuple[int, int]] = []
        self.fail_reads = 0

    async def read_from(self, index: int, limit: int) -> list[AuditEvent]:
        from bastion.errors import ConnectionProblem

        self.reads.append((index, limit))
        if self.fail_reads:
            self.fail_reads -= 1
            raise ConnectionProblem("backend unavailable")
        return self.events[index : index + limit]


class FlakyOutput:
    """Records acknowledged batches; fails the next ``fail`` sends."""

    name = "flaky"

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.batches: list[list[AuditEvent]] = []
        self.attempts = 0
        self.closed = False

    async def send(self, events: Sequence[AuditEvent]) -> None:
        from bastion.errors import ConnectionProblem

        self.attempts += 1
        if self.fail:
            self.fail -= 1
            raise ConnectionProblem("receiver down")
        self.batches.append(list(events))

    async def close(self) -> None:
        self.closed = True
