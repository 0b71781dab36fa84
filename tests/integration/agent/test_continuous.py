"""Continuous checks on a real node over loopback: idle and expiry deadlines end live SSH sessions
(the pure decision and the timer loop are tests/unit/agent/test_continuous.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "agent"))
from nodeharness import DEFAULT_ROLES, LOGIN, NodeHarness, RawAccept, make_node, role  # noqa: E402

from bastion.agent.continuous import (
    CERT_EXPIRED,
    CERT_EXPIRED_MESSAGE,
    IDLE_TIMEOUT,
)
from bastion.types.identity import Identity


def identity(expires: datetime) -> Identity:
    return Identity(cluster="c", user="alice", roles=("dev",), logins=("a",), expires=expires)


# -- the pure decision -------------------------------------------------------------------------


# -- the timer loop, on a FakeClock ------------------------------------------------------------


# -- a real node (asyncssh client) -------------------------------------------------------------

ROLES = [
    *DEFAULT_ROLES,
    role("idle1s", {"logins": [LOGIN], "node_labels": {"*": "*"}}, client_idle_timeout="1s"),
    role("expcert", {"logins": [LOGIN], "node_labels": {"*": "*"}},
         disconnect_expired_cert=True),
]  # fmt: skip


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeHarness]:
    """A node whose FakeClock follows real time (the timer sleeps for real)."""
    h = await make_node(tmp_path, roles=ROLES)
    tasks: set[asyncio.Task[None]] = set()
    server = await asyncio.get_running_loop().create_server(
        lambda: RawAccept(h.node, tasks), "127.0.0.1", 0
    )
    h.port = server.sockets[0].getsockname()[1]

    async def follow_real_time() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            h.clock.advance(now - last)
            last = now

    pump = asyncio.get_running_loop().create_task(follow_real_time())
    try:
        yield h
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        server.close()
        await h.node.close()
        await server.wait_closed()


async def test_idle_session_ends_busy_one_survives(node: NodeHarness) -> None:
    client = await node.client(roles=("idle1s",))
    async with await node.connect(client) as conn:
        idle = await conn.create_process("sleep 30")
        busy = await conn.create_process("cat")
        for _ in range(12):  # 3 s of input every 0.25 s, echoed back by cat
            busy.stdin.write("tick\n")
            async with asyncio.timeout(5):
                assert (await busy.stdout.readline()).strip() == "tick"
            await asyncio.sleep(0.25)
        async with asyncio.timeout(5):  # a hang guard, not a measurement (bench/ measures)
            await idle.wait_closed()
        assert "idle for 1s; disconnected" in await idle.stderr.read()
        assert not busy.is_closing()
        busy.stdin.write("still here\n")
        async with asyncio.timeout(5):
            assert (await busy.stdout.readline()).strip() == "still here"
        busy.stdin.write_eof()
    terminated = await node.audit.wait_for("session.terminated")
    assert [e.reason for e in terminated] == [IDLE_TIMEOUT]
    assert terminated[0].user == "alice"


async def test_idle_session_ends_long_before_its_command(node: NodeHarness) -> None:
    client = await node.client(roles=("idle1s",))
    async with await node.connect(client) as conn:
        proc = await conn.create_process("sleep 30")
        async with asyncio.timeout(5):  # a hang guard, not a measurement: the command runs 30 s
            await proc.wait_closed()
        assert "idle for 1s; disconnected" in await proc.stderr.read()
    await node.audit.wait_for("session.terminated")
    await node.audit.wait_for("session.end")
    assert not node.registry.find(lambda c: c.kind == "ssh_session")


async def test_expired_certificate_ends_session(node: NodeHarness) -> None:
    # Long enough that a loaded machine still starts the shell before the certificate expires.
    client = await node.client(roles=("expcert",), ttl=timedelta(seconds=5))
    assert client.identity is not None
    async with await node.connect(client) as conn:
        proc = await conn.create_process("echo started; sleep 30")
        async with asyncio.timeout(5):
            assert (await proc.stdout.readline()).strip() == "started"
        async with asyncio.timeout(10):
            await proc.wait_closed()
        ended_at = node.clock.now()
        assert ended_at >= client.identity.expires
        assert CERT_EXPIRED_MESSAGE in await proc.stderr.read()
    terminated = await node.audit.wait_for("session.terminated")
    assert terminated[0].reason == CERT_EXPIRED


async def test_without_the_option_the_expiry_does_not_end_sessions(node: NodeHarness) -> None:
    client = await node.client(roles=("dev",), ttl=timedelta(seconds=2))
    async with await node.connect(client) as conn:
        proc = await conn.create_process("sleep 3.5; echo survived")
        async with asyncio.timeout(8):
            assert (await proc.stdout.readline()).strip() == "survived"
    assert not node.audit.of("session.terminated")
