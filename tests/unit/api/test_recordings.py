"""The wire form of upload metadata (the routes run end to end in
tests/integration/test_recordings.py)."""

from __future__ import annotations

import base64
import uuid

import pytest

from bastion.api.recordings import decode_meta_header, encode_meta_header
from bastion.errors import BadParameter
from bastion.recording.store import RecordingMeta


def test_meta_header_round_trip_with_non_ascii() -> None:
    meta = RecordingMeta(
        session_id=str(uuid.uuid4()), user="zoë", command="echo ✓", sha256="a" * 64
    )
    header = encode_meta_header(meta)
    assert header.isascii()
    assert decode_meta_header(header) == meta


@pytest.mark.parametrize(
    "value",
    ["", "!!!", base64.urlsafe_b64encode(b'{"session_id": "../x", "user": "a"}').decode()],
)
def test_bad_meta_header(value: str) -> None:
    with pytest.raises(BadParameter):
        decode_meta_header(value)
