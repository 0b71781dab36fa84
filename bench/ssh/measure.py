"""Measurements of the SSH benchmark, each against a list of ``ssh``-like argv prefixes:

* :func:`command_time` — wall time of one ``true`` command (connect + auth + exec + close),
* :func:`throughput` — ``head -c N /dev/zero | <argv> 'cat >/dev/null'`` in MB/s,
* :func:`idle_sessions` — N concurrent idle SSH sessions through our proxy (asyncssh clients in
  this process, through the same TLS route ``bsh`` uses) and the proxy process's RSS growth.

A measurement that fails raises :class:`Skipped` with the reason (the runner prints it).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CMD_TIMEOUT = 120.0


class Skipped(Exception):
    """A measurement that could not be taken; ``str()`` says why."""


def _tail(text: str | bytes | None, limit: int = 300) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = (text or "").strip()
    return text[-limit:] if text else "(no output)"


def command_time(argv: list[str], env: Mapping[str, str], runs: int) -> list[float]:
    """Seconds for each of ``runs`` executions of ``argv + ['true']`` (after one warm-up)."""
    samples: list[float] = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            [*argv, "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=CMD_TIMEOUT,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise Skipped(f"exit {done.returncode}: {_tail(done.stderr)}")
        if i:
            samples.append(elapsed)
    return samples


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def throughput(argv: list[str], env: Mapping[str, str], nbytes: int) -> float:
    """MB/s (10^6 bytes per second) of ``nbytes`` zeros piped to ``cat >/dev/null`` remotely."""
    start = time.perf_counter()
    source = subprocess.Popen(["head", "-c", str(nbytes), "/dev/zero"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(
            [*argv, "cat >/dev/null"],
            stdin=source.stdout,
            capture_output=True,
            env=dict(env),
            timeout=max(CMD_TIMEOUT, nbytes / 5e6),
            check=False,
        )
    finally:
        assert source.stdout is not None
        source.stdout.close()
        source.kill()
        source.wait()
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise Skipped(f"exit {done.returncode}: {_tail(done.stderr)}")
    return nbytes / elapsed / 1e6


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Skipped(f"no VmRSS for pid {pid}")


@dataclass
class MemoryResult:
    sessions: int
    before_kib: int
    after_kib: int
    retried: int = 0
    """Session openings that failed once with a connection error and were retried."""

    @property
    def per_session_kib(self) -> float:
        return (self.after_kib - self.before_kib) / max(self.sessions, 1)


async def _open_sessions(
    home: Path, node: str, login: str, count: int, proxy_pid: int, settle: float
) -> MemoryResult:
    import asyncssh

    from bastion.client.profile import ProfileStore
    from bastion.client.ssh import connect
    from bastion.errors import ConnectionProblem

    profile = ProfileStore(home).load(None)
    conns: list[asyncssh.SSHClientConnection] = []
    procs: list[asyncssh.SSHClientProcess[bytes]] = []
    gate = asyncio.Semaphore(16)  # stays under the proxy's per-IP unauthenticated limit

    retried = 0

    async def one() -> None:
        nonlocal retried
        async with gate:
            try:
                conn = await connect(profile, node, login)
            except ConnectionProblem:  # seen once on a loaded CI machine: retry, and say so
                retried += 1
                await asyncio.sleep(0.5)
                conn = await connect(profile, node, login)
            conns.append(conn)
            # An idle session: a channel running `cat` that waits for input forever.
            procs.append(await conn.create_process("cat", encoding=None))

    async def close_all() -> None:
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        conns.clear()

    try:
        # Warm up: the first sessions pay for lazy imports and pools on both sides.
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(8, count)):
                tg.create_task(one())
        await close_all()
        await asyncio.sleep(settle)
        before = rss_kib(proxy_pid)
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tg.create_task(one())
        await asyncio.sleep(settle)
        for proc in procs[-count:]:  # every session still alive?
            if proc.exit_status is not None:
                raise Skipped("an idle session ended early")
        after = rss_kib(proxy_pid)
        return MemoryResult(count, before, after, retried)
    finally:
        await close_all()


def idle_sessions(
    home: Path, node: str, login: str, count: int, proxy_pid: int, settle: float = 2.0
) -> MemoryResult:
    """Open ``count`` concurrent idle sessions to ``node`` through the proxy and return the
    proxy process's RSS before and after (each after ``settle`` seconds of quiet)."""
    try:
        return asyncio.run(
            asyncio.wait_for(
                _open_sessions(home, node, login, count, proxy_pid, settle),
                timeout=60 + count * 0.5,
            )
        )
    except TimeoutError:
        raise Skipped(f"opening {count} sessions took too long") from None
