"""The agent's durable event spool, and APIEmitter delivering it to a real (in-process) auth."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.agent import event_spool
from bastion.agent.event_spool import EventSpool, new_event_id, parse_lines
from bastion.agent.remote import APIEmitter
from bastion.audit.log import AuditQuery
from bastion.errors import BadParameter, LimitExceeded
from bastion.testing.agent_auth import InProcessAuth, node_guard


@pytest.fixture
def spools() -> Iterator[list[EventSpool]]:
    opened: list[EventSpool] = []
    yield opened
    for spool in opened:
        spool.close()


def opener(spools: list[EventSpool], directory: Path, **kw: Any) -> EventSpool:
    spool = EventSpool(directory, **kw)
    spools.append(spool)
    return spool


async def drain(spool: EventSpool) -> list[dict[str, Any]]:
    out = []
    while batch := await spool.read():
        out.extend(e.event for e in batch if e.event is not None)
        await spool.ack(batch[-1].end)
    return out


async def test_appended_events_come_back_in_order_and_ack_persists(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    spool = opener(spools, tmp_path / "s")
    ids = [await spool.append({"type": "exec", "n": i}) for i in range(5)]
    assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)
    batch = await spool.read()
    assert [e.event["n"] for e in batch if e.event] == [0, 1, 2, 3, 4]
    await spool.ack(batch[1].end)  # two delivered
    spool.close()
    again = opener(spools, tmp_path / "s")  # the node restarts: the rest is replayed
    rest = await drain(again)
    assert [e["n"] for e in rest] == [2, 3, 4] and [e["event_id"] for e in rest] == ids[2:]
    assert again.empty and (tmp_path / "s" / "events.jsonl").stat().st_size == 0  # compacted
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"


async def test_a_torn_last_line_is_cut_off_at_open(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    spool = opener(spools, tmp_path)
    await spool.append({"type": "session.start", "n": 1})
    spool.close()
    with (tmp_path / "events.jsonl").open("ab") as f:
        f.write(b'{"type":"session.end","event_id":"ab')  # died inside the write
    again = opener(spools, tmp_path)
    await again.append({"type": "session.end", "n": 2})
    assert [e["n"] for e in await drain(again)] == [1, 2]


async def test_an_acked_offset_beyond_the_file_resends_everything(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    spool = opener(spools, tmp_path)
    await spool.append({"type": "exec", "n": 1})
    spool.close()
    (tmp_path / "acked").write_text("999999\n")  # crashed between acked=0 and the truncate
    assert [e["n"] for e in await drain(opener(spools, tmp_path))] == [1]


async def test_unreadable_lines_are_returned_for_rejection_not_lost(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    (tmp_path / "events.jsonl").write_bytes(b'not json\n{"no":"id"}\n')
    spool = opener(spools, tmp_path)
    await spool.append({"type": "exec"})
    batch = await spool.read()
    assert [e.event is None for e in batch] == [True, True, False]
    await spool.reject(batch[0], "unreadable")
    rejected = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{"reason": "unreadable", "line": "not json"}]


async def test_concurrent_appends_share_fsyncs(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opener(spools, tmp_path)
    calls = []
    real = os.fsync
    monkeypatch.setattr(event_spool.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    await asyncio.gather(*(spool.append({"type": "exec", "n": i}) for i in range(200)))
    assert len(calls) < 50  # group commit: one fsync per write of many lines
    assert [e["n"] for e in await drain(spool)] == list(range(200))  # in call order


async def test_a_full_spool_refuses_new_events_but_keeps_room_for_closing_ones(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    spool = opener(spools, tmp_path, max_bytes=2000)
    pad = "x" * 150
    while spool.unacked_bytes < 1800 - 250:
        await spool.append({"type": "session.start", "pad": pad})
    with pytest.raises(LimitExceeded, match="new sessions are refused"):
        for _ in range(3):
            await spool.append({"type": "session.start", "pad": pad})
    await spool.append({"type": "session.end", "pad": pad})  # the reserve
    with pytest.raises(LimitExceeded):
        for _ in range(3):
            await spool.append({"type": "session.end", "pad": pad})
    events = await drain(spool)
    assert events[-1]["type"] == "session.end"  # nothing in between was dropped
    await spool.append({"type": "session.start"})  # room again once delivered
    with pytest.raises(BadParameter):
        EventSpool(tmp_path / "tiny", max_bytes=10)


async def test_a_long_acked_prefix_is_compacted_while_events_wait(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_spool, "COMPACT_BYTES", 200)
    spool = opener(spools, tmp_path)
    for i in range(10):
        await spool.append({"type": "exec", "n": i})
    batch = await spool.read()
    await spool.ack(batch[6].end)
    assert (tmp_path / "events.jsonl").stat().st_size == batch[-1].end - batch[6].end
    spool.close()
    assert [e["n"] for e in await drain(opener(spools, tmp_path))] == [7, 8, 9]


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=8), st.binary())
def test_parse_lines_splits_complete_lines_and_keeps_a_partial_tail(
    lines: list[bytes], tail: bytes
) -> None:
    tail = tail.replace(b"\n", b"")
    data = b"".join(line + b"\n" for line in lines) + tail
    events, end = parse_lines(data, 100)
    assert end == 100 + len(data) - len(tail)
    assert [e.raw for e in events] == [line for line in lines if line.strip()]
    assert all(e.event is None or isinstance(e.event.get("event_id"), str) for e in events)


def test_event_ids_are_32_hex_digits() -> None:
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in (new_event_id() for _ in range(10)))


async def test_a_failed_write_raises_a_clear_error_and_leaves_no_torn_line(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opener(spools, tmp_path)
    await spool.append({"type": "exec", "n": 1})
    real = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_spool.os, "fsync", disk_full)
    with pytest.raises(LimitExceeded, match="no space left"):
        await spool.append({"type": "exec", "n": 2})
    monkeypatch.setattr(event_spool.os, "fsync", real)
    await spool.append({"type": "exec", "n": 3})
    assert [e["n"] for e in await drain(spool)] == [1, 3]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=1, max_value=12), st.floats(min_value=0, max_value=1))
def test_a_crash_anywhere_in_a_write_keeps_exactly_the_complete_events(
    tmp_path_factory: pytest.TempPathFactory, count: int, cut: float
) -> None:
    directory = tmp_path_factory.mktemp("crash")

    async def scenario() -> None:
        spool = EventSpool(directory)
        try:
            for i in range(count):
                await spool.append({"type": "exec", "n": i, "pad": "y" * i})
        finally:
            spool.close()
        path = directory / "events.jsonl"
        data = path.read_bytes()
        keep = int(len(data) * cut)
        path.write_bytes(data[:keep])  # the node died with only this much on disk
        complete = data[:keep].count(b"\n")
        again = EventSpool(directory)
        try:
            await again.append({"type": "exec", "n": -1})
            assert [e["n"] for e in await drain(again)] == [*range(complete), -1]
        finally:
            again.close()

    asyncio.run(scenario())


async def test_a_batch_refused_as_too_large_is_resent_event_by_event_once(
    tmp_path: Path, spools: list[EventSpool]
) -> None:
    fx, guard = await node_guard()
    auth = InProcessAuth(guard)
    spool = opener(spools, tmp_path)
    emitter = APIEmitter(auth, spool)  # type: ignore[arg-type]
    for i in range(5):
        extra = {"huge": "z" * 100} if i == 2 else {}
        await emitter.emit("exec", user="alice", session_id=f"s{i}", **extra)
    runner = asyncio.get_running_loop().create_task(emitter.run())
    try:
        await asyncio.wait_for(emitter.flush(), 10)
    finally:
        runner.cancel()
    assert auth.calls == [5, 1, 1, 1, 1, 1]  # one refused batch, then each event once
    events = await fx.auth.audit.search(AuditQuery(types=("exec",)))
    assert [e.session_id for e in events] == ["s0", "s1", "s3", "s4"]
    assert "too large" in (tmp_path / "rejected.jsonl").read_text()


async def test_append_many_stores_a_batch_in_order_with_one_fsync_all_or_none(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opener(spools, tmp_path, max_bytes=4000)
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(event_spool.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    ids = await spool.append_many([{"type": "db.session.query", "n": i} for i in range(20)])
    assert len(calls) == 1 and len(set(ids)) == 20
    assert await spool.append_many([]) == []
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(BadParameter, match="cannot be spooled"):  # none of the batch stored
        await spool.append_many([{"type": "x", "n": 20}, {"type": "x", "bad": circular}])

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_spool.os, "fsync", disk_full)
    with pytest.raises(LimitExceeded, match="no space left"):
        await spool.append_many([{"type": "x", "n": 21}, {"type": "x", "n": 22}])
    monkeypatch.setattr(event_spool.os, "fsync", real)
    pad = "p" * 400
    with pytest.raises(LimitExceeded, match="full"):  # over the 90% mark: the whole batch
        await spool.append_many([{"type": "db.session.query", "pad": pad}] * 8)
    await spool.append_many([{"type": "db.session.end", "pad": pad}] * 2)  # the reserve
    events = await drain(spool)
    assert [e.get("n") for e in events[:20]] == list(range(20))
    assert [e["event_id"] for e in events[:20]] == ids
    assert [e["type"] for e in events[20:]] == ["db.session.end"] * 2


async def test_session_events_through_the_api_emitter_go_in_one_spool_write(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.audit.emitter import SessionEvents

    fx, guard = await node_guard()
    auth = InProcessAuth(guard)
    spool = opener(spools, tmp_path)
    emitter = APIEmitter(auth, spool)  # type: ignore[arg-type]
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(event_spool.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    writer = SessionEvents(emitter, "exec", {"user": "alice", "session_id": "s1"})
    await writer.append([{"command": f"q{i}"} for i in range(10)])
    assert writer.stored == 10 and len(calls) == 1
    runner = asyncio.get_running_loop().create_task(emitter.run())
    try:
        await asyncio.wait_for(emitter.flush(), 10)
    finally:
        runner.cancel()
    events = await fx.auth.audit.search(AuditQuery(types=("exec",)))
    assert [e.fields.get("command") for e in events] == [f"q{i}" for i in range(10)]
    assert {e.session_id for e in events} == {"s1"} and events[0].user == "alice"
