from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bastion.errors import BadParameter, ConnectionProblem
from bastion.recording.spool import Spool
from bastion.recording.store import RecordingMeta
from bastion.recording.uploader import Uploader


class FlakyTarget:
    """Refuses with ConnectionProblem ``failures`` times, then accepts (and keeps the bytes)."""

    def __init__(self, failures: int, refuse: set[str] | None = None) -> None:
        self.failures = failures
        self.refuse = refuse or set()
        self.received: dict[str, bytes] = {}

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionProblem("auth is down")
        if meta.session_id in self.refuse:
            raise BadParameter("sha256 mismatch")
        self.received[meta.session_id] = path.read_bytes()


def _record(spool: Spool, data: bytes) -> RecordingMeta:
    f = spool.open(RecordingMeta(session_id=str(uuid.uuid4()), user="u", node="n"))
    f.write(data)
    return f.finish(f.meta)


async def test_failing_then_recovering_target_loses_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    target = FlakyTarget(failures=3)
    delays: list[float] = []

    async def fake_sleep(wake: asyncio.Event, seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    uploader = Uploader(spool, target, sleep=fake_sleep)
    first = _record(spool, b"one")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(uploader.run())
        async with asyncio.timeout(5):
            await uploader.wait_idle()
        second = _record(spool, b"two")
        uploader.notify()
        await asyncio.sleep(0)
        async with asyncio.timeout(5):
            await uploader.wait_idle()
        task.cancel()
    assert target.received == {first.session_id: b"one", second.session_id: b"two"}
    assert len(delays) == 3
    # exponential backoff with jitter: 0.5, 1, 2 (each x 0.5..1.5)
    assert 0.25 <= delays[0] <= 0.75 and 1.0 <= delays[2] <= 3.0
    assert spool.ready() == [] and uploader.uploaded == [first.session_id, second.session_id]


async def test_refused_recordings_are_quarantined_not_retried(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    bad = _record(spool, b"bad")
    good = _record(spool, b"good")
    target = FlakyTarget(failures=0, refuse={bad.session_id})
    uploader = Uploader(spool, target)
    assert await uploader.upload_ready() is True
    assert uploader.failed == [bad.session_id]
    assert target.received == {good.session_id: b"good"}
    assert (tmp_path / "failed" / f"{bad.session_id}.cast").exists()


async def test_leftovers_are_recovered_and_uploaded_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    f = spool.open(RecordingMeta(session_id=str(uuid.uuid4()), user="u", node="n"))
    f.write(b"until the crash")
    f.abort()
    target = FlakyTarget(failures=0)
    uploader = Uploader(Spool(tmp_path), target)  # "after the restart"
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(uploader.run())
        async with asyncio.timeout(5):
            await uploader.wait_idle()
        task.cancel()
    assert target.received == {f.meta.session_id: b"until the crash"}


async def test_recover_runs_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    f = spool.open(RecordingMeta(session_id=str(uuid.uuid4()), user="u", node="n"))
    f.write(b"left over")
    f.abort()
    uploader = Uploader(spool, FlakyTarget(failures=0))
    assert uploader.recover() == [f.meta.session_id]
    running = spool.open(RecordingMeta(session_id=str(uuid.uuid4()), user="u", node="n"))
    assert uploader.recover() == []  # a session started since is not a leftover
    assert running.path.exists()
