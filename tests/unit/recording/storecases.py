"""Behaviour every RecordingStore shares (imported by test_store.py and test_s3.py)."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.errors import AlreadyExists, BadParameter, NotFound
from bastion.recording.store import RecordingMeta, RecordingStore

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def meta(user: str = "alice", minutes: int = 0, data: bytes = b"") -> RecordingMeta:
    import hashlib

    return RecordingMeta(
        session_id=str(uuid.uuid4()),
        user=user,
        login="root",
        node="web1",
        started=T0 + timedelta(minutes=minutes),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def check_store(store: RecordingStore, tmp: Path) -> None:
    assert await store.list() == []
    body = b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hello"]\n'
    src = tmp / "src.cast"
    src.write_bytes(body)
    late, early = meta("bob", 5, body), meta("alice", 1, body)
    for m in (late, early):
        await store.put(m, src)
    assert [m.session_id for m in await store.list()] == [early.session_id, late.session_id]
    assert await store.meta(late.session_id) == late
    assert await store.read(late.session_id) == body
    sink = io.BytesIO()
    await store.copy_to(late.session_id, sink)
    assert sink.getvalue() == body
    with pytest.raises(AlreadyExists):
        await store.put(late, src)
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound):
        await store.meta(missing)
    with pytest.raises(NotFound):
        await store.read(missing)
    with pytest.raises(NotFound):
        await store.copy_to(missing, io.BytesIO())
    for bad in ("../../etc/passwd", "A" * 36, str(uuid.uuid4()).upper()):
        with pytest.raises(BadParameter):
            await store.read(bad)
