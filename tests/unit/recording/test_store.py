from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bastion.errors import BadParameter
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
