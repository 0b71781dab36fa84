"""Which recording store the configuration names.

Layer: ``recording`` (domain). Here rather than in :mod:`.store` because it knows both
implementations, and :mod:`.s3` builds on :mod:`.store`.
"""

from __future__ import annotations

from pathlib import Path

from bastion.config.schema import RecordingStorageConfig
from bastion.recording.store import LocalRecordingStore, RecordingStore

__all__ = ["open_store"]


def open_store(config: RecordingStorageConfig, data_dir: Path) -> RecordingStore:
    """The store the configuration names (``local`` under ``data_dir`` by default, or ``s3``).

    Raises:
        BadParameter: ``s3`` without a bucket.
    """
    if config.type == "s3":
        from bastion.recording.s3 import S3RecordingStore  # boto3 loads only when used

        return S3RecordingStore.from_config(config)
    return LocalRecordingStore(Path(config.path) if config.path else data_dir / "recordings")
