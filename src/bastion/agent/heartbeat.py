"""Heartbeats: the node resource with its labels, sent to auth periodically with a TTL.

Layer: agent. Three parts, each testable alone:

* :func:`node_resource` builds the :class:`~bastion.types.inventory.Node` (the only place that
  does);
* :class:`CommandLabelRunner` keeps dynamic command labels (``command: [uname, -r]``,
  ``period: 1m``) fresh: each command runs with a timeout, its output is reduced to one short
  line; the command runner and the sleep are injectable, so tests need no processes or time;
* :func:`heartbeat_loop` sends the node every ``interval`` with ``expires = now + 3 * interval``
  (a node that stops heartbeating disappears), retrying with capped, jittered backoff. It never
  dies on errors; only cancellation stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta

import structlog

from bastion import __version__
from bastion.agent.deps import NodeConfig
from bastion.clock import Clock, SystemClock
from bastion.config.schema import CommandLabelConfig
from bastion.types.duration import parse_duration
from bastion.types.inventory import CommandLabel, Node, NodeSpec
from bastion.types.meta import Metadata

__all__ = [
    "COMMAND_TIMEOUT",
    "MAX_LABEL_LENGTH",
    "CommandLabelRunner",
    "CommandRunner",
    "Sleep",
    "command_labels",
    "heartbeat_loop",
    "label_value",
    "node_resource",
    "run_command",
]

log = structlog.get_logger(__name__)

MAX_LABEL_LENGTH = 100
COMMAND_TIMEOUT = 5.0
"""Seconds a command label may run before it is killed."""
_MIN_PERIOD = 1.0
_MAX_OUTPUT = 64 * 1024

CommandRunner = Callable[[Sequence[str], float], Awaitable[str]]
"""Runs ``argv`` with a timeout (seconds) and returns its standard output.

Raises on failure (non-zero exit, timeout, missing program)."""
Sleep = Callable[[float], Awaitable[None]]


def command_labels(commands: Sequence[CommandLabelConfig]) -> dict[str, CommandLabel]:
    """The configured command labels (``ssh_service.commands``, a database's ``commands``),
    not run yet."""
    return {
        c.name: CommandLabel(command=c.command, period=f"{int(c.period.total_seconds())}s")
        for c in commands
    }


def label_value(output: str) -> str:
    """Reduce command output to a label value: stripped, first line, at most 100 characters."""
    lines = output.strip().splitlines()
    return lines[0].strip()[:MAX_LABEL_LENGTH] if lines else ""


async def run_command(argv: Sequence[str], time_limit: float) -> str:
    """Run a command label's program (no shell) and return its output.

    Raises:
        TimeoutError: it ran longer than ``time_limit`` seconds (it is killed).
        RuntimeError: it exited with a non-zero status.
        OSError: it could not be started.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(time_limit):
            stdout, _ = await proc.communicate()
    except BaseException:  # timeout or cancellation: do not leave it running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with status {proc.returncode}")
    return stdout[:_MAX_OUTPUT].decode("utf-8", "replace")


class CommandLabelRunner:
    """Runs dynamic command labels on their periods and keeps their latest values.

    Args:
        labels: label name -> command and period (from the node configuration).
        runner: how to run a command (default :func:`run_command`).
        clock: for ``monotonic()``; due times are kept per label.
        timeout: seconds per command.
    """

    def __init__(
        self,
        labels: Mapping[str, CommandLabel],
        *,
        runner: CommandRunner = run_command,
        clock: Clock | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self._labels = dict(labels)
        self._runner = runner
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._periods = {
            name: max(_MIN_PERIOD, parse_duration(label.period).total_seconds())
            for name, label in self._labels.items()
        }
        self._results: dict[str, str] = {name: label.result for name, label in labels.items()}
        self._due: dict[str, float] = dict.fromkeys(self._labels, 0.0)

    def results(self) -> dict[str, str]:
        """The latest value of every command label (empty before its first run)."""
        return dict(self._results)

    def labels(self) -> dict[str, CommandLabel]:
        """The command labels with their latest results (for the node resource)."""
        return {
            name: label.model_copy(update={"result": self._results[name]})
            for name, label in self._labels.items()
        }

    async def _run_one(self, name: str) -> None:
        argv = self._labels[name].command
        try:
            output = await self._runner(argv, self._timeout)
            self._results[name] = label_value(output)
        except Exception as exc:  # a failing label must not stop the others
            log.warning("command label failed", label=name, command=argv, error=str(exc))
            self._results[name] = label_value(f"error: {exc}")

    async def run_due(self) -> list[str]:
        """Run every label whose period has elapsed (all of them the first time).

        Returns:
            The names that ran.
        """
        now = self._clock.monotonic()
        due = [name for name, at in self._due.items() if at <= now]
        for name in due:
            await self._run_one(name)
            self._due[name] = now + self._periods[name]
        return due

    def next_due_in(self) -> float:
        """Seconds until the next label is due (0 when one is due now)."""
        if not self._due:
            return float("inf")
        return max(0.0, min(self._due.values()) - self._clock.monotonic())

    async def run(self, sleep: Sleep = asyncio.sleep) -> None:
        """Run labels forever, each on its period. Returns at once when there are none."""
        if not self._labels:
            return
        while True:
            await self.run_due()
            await sleep(max(self.next_due_in(), 0.05))


def node_resource(
    config: NodeConfig,
    cmd_labels: Mapping[str, CommandLabel],
    addr: str,
    tunnel: bool,
) -> Node:
    """The node resource this agent heartbeats.

    Args:
        config: the node's configuration (name, static labels).
        cmd_labels: command labels with their latest results
            (:meth:`CommandLabelRunner.labels`).
        addr: ``host:port`` of the direct listener; empty when reached only by tunnel.
        tunnel: True when the node is reachable through the proxy's reverse tunnel.

    Returns:
        The resource (``metadata.expires`` is set by :func:`heartbeat_loop`).
    """
    return Node(
        metadata=Metadata(name=config.name, labels=dict(config.labels)),
        spec=NodeSpec(
            hostname=socket.gethostname(),
            addr=addr,
            tunnel=tunnel,
            host_id=config.host_id,
            cmd_labels={k: v.model_copy() for k, v in cmd_labels.items()},
            version=__version__,
        ),
    )


async def heartbeat_loop(
    send: Callable[[Node], Awaitable[None]],
    build_node: Callable[[], Node],
    interval: timedelta,
    *,
    clock: Clock | None = None,
    sleep: Sleep = asyncio.sleep,
    send_timeout: float = 10.0,
    max_backoff: float = 60.0,
) -> None:
    """Send the node every ``interval`` with a TTL of three intervals; never returns.

    Args:
        send: upserts the node at auth (raises on failure).
        build_node: builds the current node (see :func:`node_resource`).
        interval: time between heartbeats.
        clock: for the expiry time.
        sleep: injectable for tests.
        send_timeout: seconds one send may take.
        max_backoff: cap of the retry delay after failures (doubling from 1 s, with jitter);
            a retry never waits longer than ``interval`` either, since the TTL is three.
    """
    clock = clock or SystemClock()
    period = interval.total_seconds()
    backoff = 0.0
    while True:
        try:
            node = build_node()
            node.metadata.expires = clock.now() + 3 * interval
            async with asyncio.timeout(send_timeout):
                await send(node)
        except Exception as exc:  # keep heartbeating through any failure; cancellation passes
            backoff = min(max_backoff, max(1.0, backoff * 2))
            delay = backoff * random.uniform(0.8, 1.2)
            log.warning("heartbeat failed", error=str(exc) or type(exc).__name__, retry_in=delay)
            await sleep(min(delay, period) if period > 0 else delay)
            continue
        backoff = 0.0
        await sleep(period)
