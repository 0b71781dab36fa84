from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import pytest

from bastion.errors import AlreadyExists, BadParameter
from bastion.recording.store import LocalRecordingStore, RecordingMeta

sys.path.insert(0, str(Path(__file__).parent))
from storecases import check_store, meta  # noqa: E402


async def test_local_store(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path / "recs")
    await check_store(store, tmp_path)
    files = sorted(p.name for p in (tmp_path / "recs").iterdir())
    assert len(files) == 4 and all(p.endswith((".cast", ".json")) for p in files)
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in (tmp_path / "recs").iterdir())
    (tmp_path / "recs" / "junk.json").write_text("{not json")
    assert len(await store.list()) == 2


async def test_a_recording_without_metadata_is_not_listed_or_readable(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path)
    m = meta()
    (tmp_path / f"{m.session_id}.cast").write_bytes(b"partial")
    assert await store.list() == []
    with pytest.raises(Exception, match="no recording"):
        await store.read(m.session_id)


def test_metadata_validation() -> None:
    m = meta()
    assert RecordingMeta.parse(m.model_dump_json()) == m
    with pytest.raises(BadParameter):
        RecordingMeta.parse(m.model_copy(update={"sha256": "xyz"}).model_dump_json())
    with pytest.raises(BadParameter):
        RecordingMeta.parse(b'{"session_id": "x", "user": "a"}')
    with pytest.raises(BadParameter):
        RecordingMeta.parse(b"[]")


def test_a_durable_file_is_stored_by_a_hard_link(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path / "recs")
    source = tmp_path / "spooled.cast"
    source.write_bytes(b"bytes")
    m = meta()
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / f"{m.session_id}.cast").write_bytes(b"left by a crash")
    store.put_durable_file(m, source)
    stored = tmp_path / "recs" / f"{m.session_id}.cast"
    assert stored.stat().st_ino == source.stat().st_ino and stored.read_bytes() == b"bytes"
    source.unlink()  # the spool forgets it: the store keeps the bytes
    assert stored.read_bytes() == b"bytes"
    assert RecordingMeta.parse((tmp_path / "recs" / f"{m.session_id}.json").read_bytes()) == m
    with pytest.raises(AlreadyExists):
        store.put_durable_file(m, stored)


def test_a_durable_file_is_copied_when_it_cannot_be_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    store = LocalRecordingStore(tmp_path / "recs")
    source = tmp_path / "spooled.cast"
    source.write_bytes(b"bytes")
    m = meta()
    store.put_durable_file(m, source)
    stored = tmp_path / "recs" / f"{m.session_id}.cast"
    assert stored.read_bytes() == b"bytes" and stored.stat().st_ino != source.stat().st_ino
    assert (stored.stat().st_mode & 0o777) == 0o600


async def test_the_directory_is_created_again_when_removed(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path / "recs")
    source = tmp_path / "x.cast"
    source.write_bytes(b"bytes")
    await store.put(meta(), source)
    shutil.rmtree(tmp_path / "recs")
    m = meta()
    await store.put(m, source)
    assert await store.read(m.session_id) == b"bytes"
