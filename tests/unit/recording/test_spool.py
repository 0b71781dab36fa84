from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from bastion.errors import BadParameter
from bastion.files import fsync_dir
from bastion.recording import spool as spool_mod
from bastion.recording.spool import Spool
from bastion.recording.store import RecordingMeta


def _meta(**kw: object) -> RecordingMeta:
    return RecordingMeta(session_id=str(uuid.uuid4()), user="alice", node="web1", **kw)


def test_a_finished_recording_is_ready_with_its_hash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    meta = _meta()
    f = spool.open(meta)
    assert json.loads((spool.directory / f"{meta.session_id}.json").read_text())["user"] == "alice"
    f.write(b"header\n")
    f.write(b"")
    # written through to the OS at once: a killed process leaves it on disk
    assert (spool.directory / f"{meta.session_id}.cast.part").read_bytes() == b"header\n"
    f.write(b"event\n")
    final = f.finish(f.meta)
    assert final.sha256 == hashlib.sha256(b"header\nevent\n").hexdigest()
    assert final.size == 13
    assert f.finish(f.meta) == final  # idempotent
    f.write(b"late")  # ignored after finish
    [(ready, path)] = spool.ready()
    assert ready == final and path.read_bytes() == b"header\nevent\n"
    spool.remove(meta.session_id)
    assert spool.ready() == [] and list(spool.directory.iterdir()) == []


def test_fsync_is_rate_limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = spool_mod.os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    now = [0.0]
    spool = Spool(tmp_path)
    synced.clear()
    f = spool.open(_meta(), lambda: now[0])
    opened = len(synced)
    for _ in range(10):
        f.write(b"x")
    assert len(synced) == opened
    now[0] = 1.5
    f.write(b"y")
    assert len(synced) == opened + 1


def test_recover_finishes_what_a_stopped_node_left(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    meta = _meta()
    f = spool.open(meta)
    f.write(b"partial\n")
    f.abort()  # the node died mid-session
    (tmp_path / f"{uuid.uuid4()}.cast.part").write_bytes(b"no metadata")
    assert spool.ready() == []
    assert spool.recover() == [meta.session_id]
    [(ready, path)] = spool.ready()
    assert ready.complete is False
    assert ready.sha256 == hashlib.sha256(b"partial\n").hexdigest()
    assert path.read_bytes() == b"partial\n"


def test_quarantine_moves_to_failed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    f = spool.open(_meta())
    f.write(b"x")
    meta = f.finish(f.meta)
    spool.quarantine(meta.session_id)
    assert spool.ready() == []
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [
        f"{meta.session_id}.cast", f"{meta.session_id}.json"]  # fmt: skip


def test_bad_session_ids_never_name_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(BadParameter):
        spool.open(_meta().model_copy(update={"session_id": "../../x"}))
    with pytest.raises(BadParameter):
        spool.remove("../x")


def test_one_directory_fsync_per_open_and_per_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs: list[str] = []

    def counted(directory: Path) -> None:
        dirs.append(str(directory))
        fsync_dir(directory)

    monkeypatch.setattr(spool_mod, "fsync_dir", counted)
    spool = Spool(tmp_path)
    f = spool.open(_meta())
    assert dirs == [str(tmp_path)]
    f.write(b"x")
    f.finish(f.meta)
    assert dirs == [str(tmp_path)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{f.meta.session_id}.cast", f"{f.meta.session_id}.json"]
    )


def test_recover_finishes_a_cast_beside_its_start_metadata(tmp_path: Path) -> None:
    """A crash between the two renames of finish (one directory fsync covers both) may leave
    the ``.cast`` beside the metadata of the start: finished at the restart, not lost."""
    spool = Spool(tmp_path)
    f = spool.open(_meta())
    f.write(b"all of it\n")
    f.abort()
    (tmp_path / f"{f.meta.session_id}.cast.part").rename(tmp_path / f"{f.meta.session_id}.cast")
    done = spool.open(_meta())
    done.write(b"finished\n")
    finished = done.finish(done.meta)
    assert [m.session_id for m, _ in spool.ready()] == [finished.session_id]
    assert spool.recover() == [f.meta.session_id]  # the finished one is left as it is
    ready = {m.session_id: m for m, _ in spool.ready()}
    assert ready[finished.session_id] == finished
    assert ready[f.meta.session_id].complete is False
    assert ready[f.meta.session_id].sha256 == hashlib.sha256(b"all of it\n").hexdigest()
