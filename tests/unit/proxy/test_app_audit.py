"""Batched app.request audit: in order, batched, retried, drained before the end, back-pressure."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from bastion.errors import ConnectionProblem
from bastion.proxy import app_audit
from bastion.proxy.app_audit import RequestAudit


class _Log:
    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.gate: asyncio.Event | None = None

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        await self.emit_many([(event_type, outcome, fields)])

    async def emit_many(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionProblem("backend down")
        self.batches.append([{"type": t, **f} for t, _, f in specs])

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches for e in b]


async def test_events_are_batched_in_order_and_drained_by_the_last_release() -> None:
    log = _Log()
    audit = RequestAudit(log, flush_interval=0)  # type: ignore[arg-type]
    audit.acquire("s1")
    audit.acquire("s1")  # two connections of one session share the writer
    for i in range(10):
        await audit.add("s1", {"n": i})
    assert await audit.release("s1") == 0  # not the last: returns at once
    assert await audit.release("s1") == 0
    assert [e["n"] for e in log.events] == list(range(10))
    assert {e["type"] for e in log.events} == {"app.request"}
    assert len(log.batches) < 10  # batched, not one transaction per event
    assert audit.queued("s1") == 0


async def test_a_failed_commit_is_retried_and_nothing_is_lost() -> None:
    log = _Log(fail=2)
    audit = RequestAudit(log, flush_interval=0, retry_delay=0)  # type: ignore[arg-type]
    audit.acquire("s")
    for i in range(5):
        await audit.add("s", {"n": i})
    await audit.release("s")
    assert [e["n"] for e in log.events] == list(range(5))


@pytest.mark.timeout(10)
async def test_a_session_far_behind_makes_its_requests_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_audit, "HIGH_WATER", 3)
    monkeypatch.setattr(app_audit, "LOW_WATER", 1)
    monkeypatch.setattr(app_audit, "MAX_BATCH", 2)
    log = _Log()
    log.gate = asyncio.Event()  # the audit log is stuck
    audit = RequestAudit(log, flush_interval=0)  # type: ignore[arg-type]
    audit.acquire("s")
    await audit.add("s", {"n": 0})
    for _ in range(5):
        await asyncio.sleep(0)  # the writer took it and is stuck
    for i in range(1, 4):
        await audit.add("s", {"n": i})
    blocked = asyncio.ensure_future(audit.add("s", {"n": 4}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()  # back-pressure: the request waits for the writer
    log.gate.set()
    await blocked
    await audit.release("s")
    assert [e["n"] for e in log.events] == list(range(5))


async def test_close_drains_every_session() -> None:
    log = _Log()
    audit = RequestAudit(log, flush_interval=0)  # type: ignore[arg-type]
    for key in ("a", "b"):
        audit.acquire(key)
        await audit.add(key, {"k": key})
    await audit.close()
    assert sorted(e["k"] for e in log.events) == ["a", "b"]


@pytest.mark.parametrize(
    ("mode", "sample", "method", "websocket", "draw", "audited"),
    [
        ("all", 1.0, "GET", False, 0.99, True),
        ("all", 0.1, "GET", False, 0.05, True),
        ("all", 0.1, "HEAD", False, 0.1, False),  # draw not below the rate
        ("all", 0.1, "GET", False, 0.5, False),
        ("all", 0.1, "POST", False, 0.99, True),  # writes are never sampled away
        ("all", 0.1, "DELETE", False, 0.99, True),
        ("all", 0.1, "GET", True, 0.99, True),  # a WebSocket upgrade either
        ("writes", 0.1, "GET", False, 0.0, False),  # the rate is for all's reads only
        ("writes", 1.0, "PUT", False, 0.99, True),
        ("writes", 1.0, "GET", True, 0.99, True),
        ("none", 1.0, "POST", True, 0.0, False),
    ],
)
def test_which_requests_are_audited(
    mode: app_audit.AuditMode,
    sample: float,
    method: str,
    websocket: bool,
    draw: float,
    audited: bool,
) -> None:
    assert app_audit.request_audited(mode, sample, method, websocket, draw) is audited


def test_a_sampling_session_says_so_at_its_start() -> None:
    assert app_audit.session_fields("all", 1.0) == {"request_audit": "all"}
    assert app_audit.session_fields("all", 0.1) == {"request_audit": "all", "request_sample": 0.1}
    assert app_audit.session_fields("writes", 0.1) == {"request_audit": "writes"}


def test_about_the_rate_of_reads_is_audited() -> None:
    draws = [i / 1000 for i in range(1000)]  # uniform over [0, 1)
    kept = sum(app_audit.request_audited("all", 0.25, "GET", False, d) for d in draws)
    assert kept == 250


async def test_a_sessions_shared_attributes_go_with_each_event_through_the_bulk_writer() -> None:
    """With the audit log itself, the events are stored through its bulk writer: the
    session's shared attributes (user and session id at the top level) plus each one's own
    fields; elsewhere (emit_many only) the same attributes, merged."""
    from bastion.audit.log import AuditLog
    from bastion.backend.memory import MemoryBackend
    from bastion.clock import FakeClock

    clock = FakeClock()
    log = AuditLog(MemoryBackend(clock), clock, "c1")
    other = _Log()
    for sink in (log, other):
        audit = RequestAudit(sink, flush_interval=0)  # type: ignore[arg-type]
        audit.acquire("k", {"user": "alice", "session_id": "s-1"})
        for i in range(3):
            await audit.add("k", {"app": "grafana", "status": 200 + i})
        await audit.release("k")
    stored = await log.read_from(0, 10)
    assert [(e.user, e.session_id, e.fields["status"]) for e in stored] == [
        ("alice", "s-1", 200),
        ("alice", "s-1", 201),
        ("alice", "s-1", 202),
    ]
    assert [e["user"] for e in other.events] == ["alice"] * 3
    assert {e["session_id"] for e in other.events} == {"s-1"}
