from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.canonical import decode, encode
from bastion.errors import BadParameter
from bastion.types.audit import AuditEvent

TEXT = st.text(max_size=20)


def test_encoding_is_sorted_compact_utf8():
    event = AuditEvent(
        type="user.login",
        time=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        user="zoë",
        fields={"b": 1, "a": [True, None]},
        id="e1",
        index=3,
    )
    data = encode(event)
    assert data.startswith(
        b'{"cluster":"","code":"","device_id":"","fields":{"a":[true,null],"b":1}'
    )
    assert "zoë".encode() in data and b" " not in data
    assert b'"time":"2026-11-24T12:00:00Z"' in data


@given(TEXT, TEXT, st.dictionaries(TEXT, st.integers() | TEXT | st.booleans()), st.integers(0))
def test_decode_encode_round_trip_is_stable(user, target, fields, index):
    event = AuditEvent(
        type="x",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        user=user,
        target=target,
        fields=fields,
        index=index,
    )
    data = encode(event)
    assert decode(data) == event
    assert encode(decode(data)) == data


def test_decode_rejects_garbage_with_a_clear_error():
    with pytest.raises(BadParameter, match="not a valid audit event"):
        decode(b"{nope")
    with pytest.raises(BadParameter):
        decode(b'{"type": "x"}')
