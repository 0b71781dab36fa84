"""A database session's recording: in memory while it is short, in the spool once it lasts."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from bastion.clock import FakeClock
from bastion.protocols.postgres import Statement
from bastion.proxy.db_route import _RECORDING_FLUSH, _Recording
from bastion.recording.asciicast import parse_cast
from bastion.recording.dbcast import DbCastBuilder, DbCastHeader
from bastion.recording.spool import Spool
from bastion.recording.store import RecordingMeta
from bastion.recording.uploader import Uploader


class Target:
    """Takes recordings as files (:class:`BytesTarget`: also as bytes)."""

    def __init__(self) -> None:
        self.got: dict[str, bytes] = {}

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        self.got[meta.session_id] = path.read_bytes()


class BytesTarget(Target):
    async def upload_bytes(self, meta: RecordingMeta, data: bytes) -> None:
        self.got[meta.session_id] = data


def _recording(spool: Spool, target: Target, clock: FakeClock) -> _Recording:
    meta = RecordingMeta(session_id="5c3e54c5-9e43-4d0c-a1a4-0c1b6e1e5f10", user="alice",
                         node="pg1", kind="db", started=clock.now())  # fmt: skip
    header = DbCastHeader(user="alice", db_service="pg1", db_user="app", db_name="app")
    return _Recording(Uploader(spool, target), meta, DbCastBuilder(header), clock)


def _files(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.directory.iterdir())


async def test_a_short_session_is_held_in_memory_never_spooled(tmp_path: Path) -> None:
    clock, spool = FakeClock(), Spool(tmp_path)
    recording = _recording(spool, BytesTarget(), clock)
    await recording.write([Statement("select 1")])
    clock.advance(_RECORDING_FLUSH / 2)
    await recording.write([Statement("select $1", ("2",), "extended")])
    meta = await recording.finish(clock.now())
    assert meta is not None and recording.held is not None
    events = parse_cast(recording.held).events
    assert [(e.time, e.data) for e in events] == [
        (0.0, "select 1\r\n"),
        (0.5, 'select $1 -- params: ["2"]\r\n'),
    ]
    assert meta.sha256 == hashlib.sha256(recording.held).hexdigest()
    assert meta.size == len(recording.held) and meta.ended == clock.now()
    assert _files(spool) == []


async def test_a_lasting_session_is_spooled_as_it_goes(tmp_path: Path) -> None:
    clock, spool = FakeClock(), Spool(tmp_path)
    recording = _recording(spool, BytesTarget(), clock)
    await recording.write([Statement("select 1")])
    assert _files(spool) == []
    clock.advance(_RECORDING_FLUSH)
    await recording.write([Statement("select 2")])  # a second in: the spool file is made
    sid = "5c3e54c5-9e43-4d0c-a1a4-0c1b6e1e5f10"
    assert _files(spool) == [f"{sid}.cast.part", f"{sid}.json"]
    clock.advance(timedelta(seconds=0.1))
    await recording.write([Statement("select 3")])
    meta = await recording.finish(clock.now())
    assert meta is not None and recording.held is None
    data = (tmp_path / f"{sid}.cast").read_bytes()
    events = parse_cast(data).events
    assert [e.data for e in events] == ["select 1\r\n", "select 2\r\n", "select 3\r\n"]
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    assert [m.session_id for m, _ in spool.ready()] == [sid]


async def test_a_short_session_is_spooled_when_the_uploader_cannot_hold_it(
    tmp_path: Path,
) -> None:
    clock, spool = FakeClock(), Spool(tmp_path)
    recording = _recording(spool, Target(), clock)  # a target that takes files only
    await recording.write([Statement("select 1")])
    meta = await recording.finish(clock.now())
    assert meta is not None and recording.held is None
    [(ready, path)] = spool.ready()
    assert ready.sha256 == meta.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
