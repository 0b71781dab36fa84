from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.canonical import (
    PlainTemplate,
    decode,
    encode,
    encode_obj,
    event_doc,
    is_plain,
    iso_time,
    plain_bytes,
    plain_parts,
    trusted_event,
    with_index,
)
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


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    TEXT,
    TEXT,
    st.dictionaries(TEXT, JSONISH | st.datetimes(timezones=st.just(UTC)), max_size=4),
    st.integers(0) | st.none(),
    st.datetimes(timezones=st.just(UTC)),
)
def test_the_write_path_fast_encoding_is_byte_for_byte_the_validated_one(
    user, reason, fields, index, when
):
    """trusted_event + event_doc (no pydantic round trip) give the bytes encode() gives for
    the validated event, or decline (non-plain fields: the validated path is used)."""
    values = {
        "type": "app.request",
        "code": "T0000I",
        "time": when,
        "cluster": "c",
        "outcome": "success",
        "fields": dict(fields),
        "id": "0-1",
        "user": user,
        "reason": reason,
    }
    validated = AuditEvent(**values)
    fast = trusted_event(dict(values))
    assert fast == validated and fast.model_dump() == validated.model_dump()
    if index is not None:
        validated = validated.model_copy(update={"index": index})
        fast = with_index(fast, index)
    assert fast.index == validated.index
    doc = event_doc(fast)
    if doc is not None:
        assert encode_obj(doc) == encode(validated)
        assert plain_bytes(fast) == encode(validated)  # what the log stores
        assert is_plain(fields)
    else:
        assert not is_plain(fields) and plain_bytes(fast) is None


def test_non_utc_times_and_non_finite_floats_take_the_validated_path() -> None:
    from datetime import timedelta, timezone

    plus2 = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    event = trusted_event({"type": "x", "time": plus2})
    assert event_doc(event) is None and plain_bytes(event) is None and iso_time(plus2) is None
    assert not is_plain({"x": float("inf")}) and not is_plain({1: "a"})
    assert iso_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


TOP = st.dictionaries(
    st.sampled_from(
        ["user", "login", "target", "remote_addr", "session_id", "device_id", "reason"]
    ),
    TEXT,
    max_size=7,
)


@given(
    TOP,
    st.dictionaries(TEXT, JSONISH | st.datetimes(timezones=st.just(UTC)), max_size=4),
    st.integers(0, 10**19),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(["success", "failure"]),
    TEXT,
)
def test_the_bulk_path_parts_join_to_the_validated_bytes(top, fields, index, when, outcome, kind):
    """plain_parts (no event object at all) joined around the index give the bytes encode()
    gives for the validated event, or decline exactly when plain_bytes does."""
    values = {
        "type": kind,
        "code": "T0000W",
        "time": when,
        "cluster": "c\u00e9",
        "outcome": outcome,
        "fields": dict(fields),
        "id": "00000000000000000001-0000abcd",
        **top,
    }
    validated = AuditEvent(**values, index=index)
    stamp = iso_time(when)
    assert stamp is not None
    parts = plain_parts("c\u00e9", "T0000W", kind, outcome, stamp, values["id"], top, fields)
    if parts is None:
        assert not is_plain(fields) and plain_bytes(validated) is None
    else:
        head, tail = parts
        assert f"{head}{index}{tail}".encode() == encode(validated)


PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(["a", "b%", "query", "parameters", "z", "\u00e9", "%s", ""]) | TEXT


@given(
    TOP,
    st.dictionaries(KEYS, PLAIN_VALUES, max_size=5),
    st.lists(st.dictionaries(KEYS, PLAIN_VALUES | st.datetimes(), max_size=4), max_size=4),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(["success", "failure"]),
    TEXT,
)
def test_a_template_gives_the_parts_of_each_event(top, shared, owns, when, outcome, kind):
    """PlainTemplate's head and tail are plain_parts of the shared and own fields merged (own
    keys win), for own fields in any order; an own field that is not plain, or a reserved
    key, makes it decline (the caller builds that event itself)."""
    stamp = iso_time(when)
    assert stamp is not None
    template = PlainTemplate("c\u00e9", "T0000W", kind, outcome, top, shared, frozenset({"z"}))
    for n, own in enumerate([*owns, *(dict(reversed(o.items())) for o in owns)]):
        event_id = f"{n:020d}-0000abcd"
        head = template.head(event_id, own)
        merged = {**shared, **own}
        parts = plain_parts("c\u00e9", "T0000W", kind, outcome, stamp, event_id, top, merged)
        if head is None:
            assert parts is None or "z" in own
        else:
            assert parts == (head, template.tail(stamp))


def test_a_template_refuses_shared_fields_that_are_not_plain():
    with pytest.raises(ValueError, match="not plain"):
        PlainTemplate("c", "T", "x", "success", {}, {"when": datetime.now(UTC)})
