from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from bastion.agent.recorder import SessionRecorder, recorder_factory, wants_recording
from bastion.agent.session import SessionMeta, SessionStream
from bastion.clock import FakeClock
from bastion.recording.asciicast import parse_cast
from bastion.recording.spool import Spool


def _meta(**kw: object) -> SessionMeta:
    base: dict[str, object] = dict(
        session_id=str(uuid.uuid4()), user="alice", login="root", node="web1",
        remote_addr="10.0.0.1:5555", kind="shell", pty=True, term="xterm", cols=100, rows=30,
        record=True,
    )  # fmt: skip
    base.update(kw)
    return SessionMeta(**base)  # type: ignore[arg-type]


async def _session(tmp_path: Path, meta: SessionMeta) -> tuple[dict[str, object], Spool, int]:
    clock = FakeClock()
    meta.started = clock.now()
    spool = Spool(tmp_path)
    finished: list[int] = []
    sent: list[bytes] = []
    stream = SessionStream(meta, lambda data, _err: sent.append(data))
    stream.observers.append(SessionRecorder(spool, clock, "test.local", lambda: finished.append(1)))
    await stream.start()
    clock.advance(0.25)
    stream.output(b"$ ")
    stream.input(b"ls\r")
    clock.advance(0.5)
    stream.output("héllo\r\n".encode()[:2])  # split inside "é"
    stream.output("héllo\r\n".encode()[2:])
    stream.resize(120, 40)
    clock.advance(1)
    meta.ended = clock.now()
    fields = await stream.end()
    assert sent and len(finished) == 1
    return fields, spool, len(finished)


async def test_output_is_recorded_and_the_hash_goes_to_session_end(tmp_path: Path) -> None:
    meta = _meta()
    fields, spool, _ = await _session(tmp_path, meta)
    [(spooled, path)] = spool.ready()
    data = path.read_bytes()
    assert fields == {"recording_sha256": hashlib.sha256(data).hexdigest(),
                      "recording_bytes": len(data)}  # fmt: skip
    assert spooled.sha256 == fields["recording_sha256"] and spooled.user == "alice"
    cast = parse_cast(data)
    assert (cast.header.width, cast.header.height, cast.header.env) == (100, 30, {"TERM": "xterm"})
    assert cast.header.title == "alice as root@web1"
    assert cast.output() == "$ héllo\r\n"
    assert cast.input() == ""  # input is not recorded unless a role asks
    assert [(e.time, e.code, e.data) for e in cast.events] == [
        (0.25, "o", "$ "),
        (0.75, "o", "h"),
        (0.75, "o", "éllo\r\n"),
        (0.75, "r", "120x40"),
    ]


async def test_input_is_recorded_when_the_roles_say_so(tmp_path: Path) -> None:
    _, spool, _ = await _session(tmp_path, _meta(record_input=True))
    [(spooled, path)] = spool.ready()
    assert parse_cast(path.read_bytes()).input() == "ls\r" and spooled.input_recorded


@pytest.mark.parametrize(
    ("kw", "wanted"),
    [
        ({}, True),
        ({"record": False}, False),
        ({"kind": "exec", "pty": False}, False),
        ({"kind": "exec", "pty": True}, True),
        ({"kind": "subsystem", "pty": False}, False),
        ({"kind": "shell", "pty": False}, True),
    ],
)
def test_what_is_recorded(tmp_path: Path, kw: dict[str, object], wanted: bool) -> None:
    meta = _meta(**kw)
    assert wants_recording(meta) is wanted
    factory = recorder_factory(Spool(tmp_path), FakeClock(), "c", lambda: None)
    assert (factory(meta) is not None) is wanted


async def test_a_recorder_that_never_started_adds_nothing(tmp_path: Path) -> None:
    recorder = SessionRecorder(Spool(tmp_path), FakeClock(), "c", lambda: None)
    recorder.on_output(b"x")
    assert await recorder.on_end(_meta()) is None


async def test_a_failing_spool_stops_the_recording_not_the_session(tmp_path: Path) -> None:
    clock = FakeClock()
    meta = _meta(started=clock.now())
    spool = Spool(tmp_path)
    sent: list[bytes] = []
    stream = SessionStream(meta, lambda data, _err: sent.append(data))
    recorder = SessionRecorder(spool, clock, "c", lambda: None)
    stream.observers.append(recorder)
    await stream.start()
    stream.output(b"before\n")
    assert recorder._file is not None
    os.close(recorder._file._fd)  # the disk goes away under the recorder
    recorder._file._fd = os.open("/dev/full", os.O_WRONLY)
    stream.output(b"after\n")
    stream.output(b"more\n")
    assert sent == [b"before\n", b"after\n", b"more\n"]  # the user saw everything
    fields = await stream.end()
    assert fields["recording_error"].startswith("recording stopped: ")
    assert "recording_sha256" not in fields
    assert spool.ready() == []  # left as .part: recovered (partial) when the node restarts
    assert spool.recover() == [meta.session_id]
