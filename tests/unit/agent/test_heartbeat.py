"""Command labels, the node resource and the heartbeat loop, with fake runners and sleeps."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from bastion.agent.deps import NodeConfig
from bastion.agent.heartbeat import (
    CommandLabelRunner,
    heartbeat_loop,
    label_value,
    node_resource,
    run_command,
)
from bastion.clock import FakeClock
from bastion.types.inventory import CommandLabel, Node

CONFIG = NodeConfig(
    name="node1",
    cluster="c",
    host_id="h",
    host_key_pem="",
    host_cert="",
    user_ca_keys=(),
    labels={"env": "dev"},
)


@pytest.mark.parametrize(
    ("output", "value"),
    [
        ("  6.1.0-18-amd64\n", "6.1.0-18-amd64"),
        ("first\nsecond\n", "first"),
        ("", ""),
        ("x" * 300, "x" * 100),
        ("\n\n  padded  \nnext", "padded"),
    ],
)
def test_label_value(output: str, value: str) -> None:
    assert label_value(output) == value


async def test_runner_runs_labels_on_their_periods() -> None:
    clock = FakeClock()
    calls: list[list[str]] = []

    async def runner(argv: Sequence[str], timeout: float) -> str:
        calls.append(list(argv))
        return f"{argv[0]}-{len(calls)}\nignored"

    labels = {
        "kernel": CommandLabel(command=["uname", "-r"], period="1m"),
        "load": CommandLabel(command=["uptime"], period="10s"),
    }
    r = CommandLabelRunner(labels, runner=runner, clock=clock)
    assert sorted(await r.run_due()) == ["kernel", "load"]
    assert r.results() == {"kernel": "uname-1", "load": "uptime-2"}
    assert await r.run_due() == []
    assert r.next_due_in() == 10
    clock.advance(10)
    assert await r.run_due() == ["load"]
    clock.advance(50)
    assert sorted(await r.run_due()) == ["kernel", "load"]
    assert r.labels()["kernel"].result == "uname-4" or r.labels()["kernel"].result == "uname-5"


async def test_runner_failure_becomes_error_value_and_others_continue() -> None:
    async def runner(argv: Sequence[str], timeout: float) -> str:
        if argv[0] == "bad":
            raise TimeoutError("took too long")
        return "ok"

    r = CommandLabelRunner(
        {"a": CommandLabel(command=["bad"]), "b": CommandLabel(command=["good"])},
        runner=runner,
        clock=FakeClock(),
    )
    await r.run_due()
    assert r.results() == {"a": "error: took too long", "b": "ok"}


async def test_runner_loop_uses_injected_sleep() -> None:
    clock = FakeClock()
    runs = 0

    async def runner(argv: Sequence[str], timeout: float) -> str:
        nonlocal runs
        runs += 1
        return "v"

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    r = CommandLabelRunner({"a": CommandLabel(command=["x"], period="30s")}, runner=runner,
                           clock=clock)  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await r.run(sleep)
    assert sleeps == [30, 30, 30] and runs == 3


async def test_run_command_real_process_and_timeout() -> None:
    assert label_value(await run_command(["echo", "hello"], 5)) == "hello"
    with pytest.raises(TimeoutError):
        await run_command(["sleep", "5"], 0.1)
    with pytest.raises(RuntimeError):
        await run_command(["false"], 5)


def test_node_resource() -> None:
    node = node_resource(
        CONFIG, {"kernel": CommandLabel(command=["uname"], result="6.1")}, "10.0.0.1:3022", False
    )
    assert node.metadata.name == "node1" and node.metadata.labels == {"env": "dev"}
    assert node.spec.hostname == socket.gethostname()
    assert node.spec.addr == "10.0.0.1:3022" and node.spec.tunnel is False
    assert node.spec.host_id == "h"
    assert node.all_labels() == {"env": "dev", "kernel": "6.1"}
    assert node.spec.version


async def test_heartbeat_sets_ttl_and_retries_with_backoff() -> None:
    clock = FakeClock()
    sent: list[Node] = []
    sent_at: list[datetime] = []
    failures = 2
    sleeps: list[float] = []

    async def send(node: Node) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("auth unreachable")
        sent.append(node)
        sent_at.append(clock.now())

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sent) == 2:
            raise asyncio.CancelledError

    def build() -> Node:
        return node_resource(CONFIG, {}, "", True)

    with pytest.raises(asyncio.CancelledError):
        await heartbeat_loop(send, build, timedelta(seconds=60), clock=clock, sleep=sleep)
    assert len(sent) == 2
    # two failed attempts back off (about 1 s, then 2 s, with jitter), then the interval
    assert 0.8 <= sleeps[0] <= 1.2 and 1.6 <= sleeps[1] <= 2.4
    assert sleeps[2:] == [60, 60]
    first = sent[0]
    assert first.metadata.expires is not None
    assert first.metadata.expires == sent_at[0] + timedelta(minutes=3)


async def test_heartbeat_survives_build_errors_and_send_timeouts() -> None:
    attempts = 0
    sleeps: list[float] = []

    def build() -> Node:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("bad label")
        return node_resource(CONFIG, {}, "", True)

    async def send(node: Node) -> None:
        await asyncio.sleep(10)  # hangs: the send timeout must cut it

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await heartbeat_loop(
            send, build, timedelta(seconds=5), clock=FakeClock(), sleep=sleep, send_timeout=0.01
        )
    assert attempts == 3
