"""Tests for bastion.testing.db_rig (the rig itself runs in tests/integration/test_db_postgres.py
and bench/db.py): the audit recorder."""

from __future__ import annotations

from typing import Any

from bastion.testing.db_rig import Recorder


class Inner:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        self.seen.append((event_type, {"outcome": outcome, **fields}))


async def test_recorder_forwards_and_keeps() -> None:
    inner = Inner()
    rec = Recorder(inner)
    await rec.emit("db.session.start", user="alice")
    await rec.emit("db.session.query", query="select 1")
    assert [e["type"] for e in rec.events] == ["db.session.start", "db.session.query"]
    assert rec.of("db.session.query")[0]["query"] == "select 1"
    assert inner.seen[0] == ("db.session.start", {"outcome": "success", "user": "alice"})
