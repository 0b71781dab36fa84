"""APIEmitter delivering the agent's durable event spool to an in-process auth through outages,
and a node with a full spool refusing sessions over loopback (the spool: tests/unit/agent)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.event_spool import EventSpool
from bastion.agent.remote import APIEmitter
from bastion.audit.log import AuditQuery
from bastion.errors import AccessDenied, BadParameter, LimitExceeded
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


async def test_emitter_delivers_exactly_once_across_outage_lost_answers_and_restart(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bastion.agent.remote.random.random", lambda: 0.0)  # short backoff
    fx, guard = await node_guard()
    auth = InProcessAuth(guard)
    auth.down = True
    spool = opener(spools, tmp_path)
    emitter = APIEmitter(auth, spool)  # type: ignore[arg-type]
    runner = asyncio.get_running_loop().create_task(emitter.run())
    await emitter.emit("session.start", user="alice", session_id="s1")
    await emitter.emit("user.login", user="alice")  # auth refuses this one
    await emitter.emit("session.end", user="alice", session_id="s1")
    await asyncio.sleep(0.1)
    runner.cancel()  # the node dies while auth is down
    spool.close()
    spool = opener(spools, tmp_path)
    emitter = APIEmitter(auth, spool)  # type: ignore[arg-type]
    runner = asyncio.get_running_loop().create_task(emitter.run())
    try:
        auth.down = False
        auth.lose_answers = 1  # stored, but the node never hears it: it resends
        await asyncio.wait_for(emitter.flush(), 10)
        await emitter.emit("exec", user="alice", session_id="s2")
        await asyncio.wait_for(emitter.flush(), 10)
    finally:
        runner.cancel()
    events = await fx.auth.audit.search(AuditQuery(types=("session.*", "exec")))
    assert [(e.type, e.session_id) for e in events] == [
        ("session.start", "s1"),
        ("session.end", "s1"),
        ("exec", "s2"),
    ]
    assert events[0].fields["agent_time"] and "event_id" not in events[0].fields
    [rejected] = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert "may not submit" in rejected["reason"] and "user.login" in rejected["line"]
    assert len(await fx.auth.audit.search(AuditQuery(types=("event.rejected",)))) == 1


async def test_emitter_keeps_events_while_auth_refuses_the_whole_batch(
    tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bastion.agent.remote.random.random", lambda: 0.0)
    fx, guard = await node_guard()
    auth = InProcessAuth(guard)
    auth.refuse = AccessDenied("this node may not submit events")
    spool = opener(spools, tmp_path)
    emitter = APIEmitter(auth, spool)  # type: ignore[arg-type]
    runner = asyncio.get_running_loop().create_task(emitter.run())
    try:
        await emitter.emit("session.start", user="alice", session_id="s1")
        await asyncio.sleep(0.3)
        assert not spool.empty  # kept, not dropped
        auth.refuse = LimitExceeded("too many requests from your address; wait and retry")
        await asyncio.sleep(0.3)
        assert not spool.empty  # rate limited: kept too
        auth.refuse = BadParameter("malformed batch")  # one event: kept aside, queue moves on
        await asyncio.wait_for(emitter.flush(), 10)
        auth.refuse = LimitExceeded("request body too large: 2000000 bytes")
        await emitter.emit("exec", user="alice", session_id="s2", command="x" * 1000)
        await asyncio.wait_for(emitter.flush(), 10)
    finally:
        runner.cancel()
    reasons = [
        json.loads(x)["reason"] for x in (tmp_path / "rejected.jsonl").read_text().splitlines()
    ]
    assert reasons == ["malformed batch", "request body too large: 2000000 bytes"]


async def test_a_node_whose_spool_is_full_refuses_new_sessions(
    harness: Any, tmp_path: Path, spools: list[EventSpool], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opener(spools, tmp_path / "spool", max_bytes=1024)
    while True:  # auth is long gone: the spool fills up to its 90% mark
        try:
            await spool.append({"type": "session.start", "pad": "p" * 100})
        except LimitExceeded:
            break
    recorded = harness.audit.emit

    async def emit(event_type: str, **fields: Any) -> Any:
        await spool.append({"type": event_type, **fields})  # what APIEmitter.emit does
        return await recorded(event_type, **fields)

    monkeypatch.setattr(harness.audit, "emit", emit)
    client = await harness.client()
    async with await harness.connect(client) as conn:
        result = await conn.run("echo should-not-run", timeout=10)
    assert "should-not-run" not in str(result.stdout)
    assert result.exit_status == 1
    assert "session refused: the audit event spool" in str(result.stderr)
    assert not harness.audit.of("session.start")
