from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.schema import RecordingStorageConfig
from bastion.errors import BadParameter
from bastion.recording.factory import open_store
from bastion.recording.store import LocalRecordingStore


def test_open_store_picks_local_by_default(tmp_path: Path) -> None:
    store = open_store(RecordingStorageConfig(), tmp_path)
    assert isinstance(store, LocalRecordingStore)
    assert store.directory == tmp_path / "recordings"
    with pytest.raises(BadParameter, match="bucket"):
        open_store(RecordingStorageConfig(type="s3"), tmp_path)
