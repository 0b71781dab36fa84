"""The SQLite backend's writer in its own process (``writer="process"``, bastion start's).

The backend contract runs on it in test_backend.py (``sqlite-process``); these are what only a
process can do: die, be signalled, outlive or not its daemon.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bastion.audit.log import AuditLog
from bastion.backend.base import Create, Item
from bastion.backend.compliance import next_events
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import FakeClock
from bastion.errors import AlreadyExists, CompareFailed, ConnectionProblem, NotFound
from bastion.testing.procs import running


async def _open(path: Path) -> SQLiteBackend:
    return await SQLiteBackend.open(str(path), FakeClock(), poll_interval=0.02, writer="process")


def _pid(backend: SQLiteBackend) -> int:
    pid = backend.writer_pid
    assert pid is not None and pid != os.getpid()
    return pid


async def _gone(pid: int, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not running(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_the_writer_is_another_process_and_errors_cross_with_their_messages(
    tmp_path: Path,
) -> None:
    backend = await _open(tmp_path / "a.sqlite")
    try:
        _pid(backend)
        first = await backend.create(Item("k/a", b"1"))
        with pytest.raises(AlreadyExists, match="k/a"):
            await backend.create(Item("k/a", b"2"))
        with pytest.raises(CompareFailed):
            await backend.update(Item("k/a", b"3"), expected_revision=first.revision + 10)
        with pytest.raises(NotFound):
            await backend.delete("k/none", expected_revision=1)
        assert (await backend.get("k/a")).value == b"1"  # reads: this process's connection
    finally:
        await backend.close()


async def test_bulk_creates_reach_watchers_with_their_values(tmp_path: Path) -> None:
    """``create_many`` sends its pairs once: only the first revision comes back, and the
    watchers get every event with its value (rebuilt from what was sent)."""
    backend = await _open(tmp_path / "b.sqlite")
    try:
        watcher = await backend.watch(["bulk/"])
        pairs = [(f"bulk/{i:03d}", f"value {i}".encode()) for i in range(300)]
        await backend.create_many(pairs)
        events = await next_events(watcher, 300)
        assert [(e.item.key, e.item.value) for e in events] == pairs
        revisions = [e.item.revision for e in events]
        assert revisions == list(range(revisions[0], revisions[0] + 300))
        assert (await backend.get("bulk/299")).revision == revisions[-1]
    finally:
        await backend.close()


async def test_an_audit_log_on_the_writer_process_keeps_gapless_indexes(tmp_path: Path) -> None:
    backend = await _open(tmp_path / "c.sqlite")
    try:
        log = AuditLog(backend, FakeClock(), "test")
        await asyncio.gather(
            *(log.append_many([("db.session.query", "success", {"n": i})]) for i in range(50)),
            *(log.emit("user.login", user=f"u{i}") for i in range(20)),
        )
        assert await log.size() == 70
        assert [e.index for e in await log.read_from(0, 100)] == list(range(70))
    finally:
        await backend.close()


async def test_a_killed_writer_fails_its_calls_and_the_next_call_starts_a_new_one(
    tmp_path: Path,
) -> None:
    backend = await _open(tmp_path / "d.sqlite")
    try:
        await backend.put(Item("k/before", b"1"))
        pid = _pid(backend)
        os.kill(pid, signal.SIGSTOP)  # the next call waits in its queue, then the child dies
        pending = asyncio.ensure_future(backend.put(Item("k/lost", b"?")))
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ConnectionProblem, match="writer process exited.*try again"):
            await asyncio.wait_for(pending, 10)
        stored = await backend.put(Item("k/after", b"2"))
        assert _pid(backend) != pid
        assert (await backend.get("k/before")).value == b"1"
        assert (await backend.get("k/after")).revision == stored.revision
    finally:
        await backend.close()


async def test_interrupt_and_terminate_leave_the_writer_to_its_daemon(tmp_path: Path) -> None:
    """A Ctrl-C or a service stop reaches the whole process group: the child keeps serving
    until the daemon closes the backend, then exits."""
    backend = await _open(tmp_path / "e.sqlite")
    pid = _pid(backend)
    try:
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.2)
        await backend.put(Item("k/still", b"1"))
        assert _pid(backend) == pid
    finally:
        await backend.close()
    assert await _gone(pid)
    with pytest.raises(ConnectionProblem, match="closed"):
        await backend.put(Item("k/closed", b"1"))


async def test_a_write_in_flight_at_close_is_made_and_answered(tmp_path: Path) -> None:
    """Closing ends only our half of the socket: the child serves what it was sent before
    (the daemon's last writes at shutdown), answers, and then exits."""
    path = tmp_path / "g.sqlite"
    backend = await _open(path)
    pid = _pid(backend)
    os.kill(pid, signal.SIGSTOP)  # the write waits on the socket while the close begins
    ops = [Create(Item(f"g/{i}", b"x")) for i in range(5)]
    writing = asyncio.ensure_future(backend.commit(ops))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(backend.close())
    await asyncio.sleep(0.2)
    os.kill(pid, signal.SIGCONT)
    await asyncio.wait_for(closing, 10)
    assert len(await asyncio.wait_for(writing, 10)) == 5
    assert await _gone(pid)
    again = await _open(path)
    try:
        assert len(await again.get_range("g/")) == 5
    finally:
        await again.close()


_DAEMON = """
import asyncio, sys
from bastion.backend.base import Create, Item
from bastion.backend.sqlite import SQLiteBackend

async def main(path):
    backend = await SQLiteBackend.open(path, writer="process")
    await backend.commit([Create(Item(f"d/{i}", b"x")) for i in range(10)])
    print(backend.writer_pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_killed_daemon_takes_its_writer_with_it(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DAEMON, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert daemon.stdout is not None
        child = int(await asyncio.wait_for(daemon.stdout.readline(), 30))
        assert running(child)
    finally:
        daemon.kill()
        await daemon.wait()
    assert await _gone(child)
    backend = await _open(path)  # what it committed is there
    try:
        assert len(await backend.get_range("d/")) == 10
        await backend.commit([Create(Item("d/next", b"y"))])
    finally:
        await backend.close()


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConnectionProblem, match="sqlite database unusable"):
        await _open(garbage)
