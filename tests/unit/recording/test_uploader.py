from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import BadParameter, ConnectionProblem
from bastion.recording.spool import Spool
from bastion.recording.store import RecordingMeta
from bastion.recording.uploader import MEMORY_BUDGET, Uploader


class FlakyTarget:
    """Refuses with ConnectionProblem ``failures`` times, then accepts (and keeps the bytes)."""

    def __init__(self, failures: int, refuse: set[str] | None = None) -> None:
        self.failures = failures
        self.refuse = refuse or set()
        self.received: dict[str, bytes] = {}

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        self._take(meta, path.read_bytes())

    def _take(self, meta: RecordingMeta, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionProblem("auth is down")
        if meta.session_id in self.refuse:
            raise BadParameter("sha256 mismatch")
        self.received[meta.session_id] = data


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


class SpoolingTarget(FlakyTarget):
    """Removes the spool files itself, as the all-in-one node's in-process target does."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.removed_by_target: list[str] = []

    async def upload_spooled(
        self, meta: RecordingMeta, path: Path, remove: Callable[[], None]
    ) -> bool:
        await self.upload(meta, path)
        remove()
        self.removed_by_target.append(meta.session_id)
        return True


async def test_notified_recordings_are_uploaded_without_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    target = SpoolingTarget()
    uploader = Uploader(spool, target)
    leftover = _record(spool, b"from before")
    assert await uploader.upload_ready() is True  # the first pass scans the spool
    scans: list[int] = []
    real = spool.ready

    def scan() -> list[tuple[RecordingMeta, Path]]:
        scans.append(1)
        return real()

    monkeypatch.setattr(spool, "ready", scan)
    first = _record(spool, b"one")
    second = _record(spool, b"two")
    uploader.notify(first)
    uploader.notify(second)
    uploader.notify(first)  # named twice (or also found by a scan): uploaded once
    assert await uploader.upload_ready() is True
    assert scans == []
    assert uploader.uploaded == [leftover.session_id, first.session_id, second.session_id]
    assert target.removed_by_target == uploader.uploaded
    assert list(tmp_path.iterdir()) == []
    uploader.notify()  # without a recording: the spool is scanned
    assert await uploader.upload_ready() is True and scans == [1]


async def test_notified_recordings_wait_while_auth_is_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    target = FlakyTarget(failures=1)
    uploader = Uploader(spool, target)
    assert await uploader.upload_ready() is True
    first, second = _record(spool, b"one"), _record(spool, b"two")
    uploader.notify(first)
    uploader.notify(second)
    assert await uploader.upload_ready() is False
    assert await uploader.upload_ready() is True
    assert target.received == {first.session_id: b"one", second.session_id: b"two"}
    assert spool.ready() == []


class BytesTarget(FlakyTarget):
    """Also takes recordings held in memory, as the all-in-one node's in-process target."""

    def __init__(self, failures: int, refuse: set[str] | None = None) -> None:
        super().__init__(failures, refuse)
        self.from_memory: list[str] = []

    async def upload_bytes(self, meta: RecordingMeta, data: bytes) -> None:
        self._take(meta, data)
        self.from_memory.append(meta.session_id)


def _held(data: bytes) -> RecordingMeta:
    """A finished recording's metadata (as ``_Recording.finish`` gives a held one)."""
    sha256 = hashlib.sha256(data).hexdigest()
    return RecordingMeta(
        session_id=str(uuid.uuid4()), user="u", node="n", size=len(data), sha256=sha256
    )


async def test_held_recordings_are_uploaded_without_spool_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.recording.uploader as uploader_module

    monkeypatch.setattr(uploader_module, "MEMORY_BUDGET", 10)
    target = BytesTarget(failures=0)
    uploader = Uploader(Spool(tmp_path), target)
    assert await uploader.upload_ready() is True
    assert uploader.can_hold(10) and not uploader.can_hold(11)
    first, second = _held(b"one"), _held(b"two")
    uploader.notify(first, b"one")
    assert uploader.can_hold(7) and not uploader.can_hold(8)  # "one" is held
    uploader.notify(second, b"two")
    uploader.notify(first)  # named again (or found by a scan): uploaded once
    uploader.notify()  # a scan finds the held ones too
    assert await uploader.upload_ready() is True
    assert target.received == {first.session_id: b"one", second.session_id: b"two"}
    assert target.from_memory == [first.session_id, second.session_id]
    assert uploader.uploaded == target.from_memory and uploader.can_hold(10)
    assert list(tmp_path.iterdir()) == []  # never a file in the spool
    # a target that takes files only: nothing is held
    assert not Uploader(Spool(tmp_path), FlakyTarget(failures=0)).can_hold(1)


async def test_a_held_recording_is_spooled_when_its_upload_fails(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    target = BytesTarget(failures=1)
    uploader = Uploader(spool, target)
    assert await uploader.upload_ready() is True
    meta = _held(b"kept")
    uploader.notify(meta, b"kept")
    assert await uploader.upload_ready() is False  # auth is down: spooled, not lost
    assert [m.session_id for m, _ in spool.ready()] == [meta.session_id]
    assert uploader.can_hold(MEMORY_BUDGET)  # no longer in memory
    assert await uploader.upload_ready() is True  # retried from the spool file
    assert target.received == {meta.session_id: b"kept"} and target.from_memory == []
    assert spool.ready() == []


async def test_a_refused_held_recording_is_quarantined(tmp_path: Path) -> None:
    meta = _held(b"bad")
    target = BytesTarget(failures=0, refuse={meta.session_id})
    uploader = Uploader(Spool(tmp_path), target)
    assert await uploader.upload_ready() is True
    uploader.notify(meta, b"bad")
    assert await uploader.upload_ready() is True
    assert uploader.failed == [meta.session_id] and target.received == {}
    assert (tmp_path / "failed" / f"{meta.session_id}.cast").read_bytes() == b"bad"


async def test_a_held_recording_the_store_cannot_write_is_spooled(tmp_path: Path) -> None:
    class FullDisk(BytesTarget):
        async def upload_bytes(self, meta: RecordingMeta, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    spool = Spool(tmp_path)
    uploader = Uploader(spool, FullDisk(failures=0))
    assert await uploader.upload_ready() is True
    meta = _held(b"kept")
    uploader.notify(meta, b"kept")
    assert await uploader.upload_ready() is False  # retried later, the loop goes on
    assert [m.session_id for m, _ in spool.ready()] == [meta.session_id]
    assert uploader.can_hold(MEMORY_BUDGET)
