from __future__ import annotations

import json

import pytest
from exportkit import make_event
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.export.rfc5424 import (
    FACILITIES,
    SD_ID,
    escape_sd_value,
    format_message,
    frame,
    severity_of,
    split_frames,
)


def parse(message: bytes) -> tuple[list[str], str, dict[str, str], str]:
    """Reference RFC 5424 parser (independent of the formatter): header, SD-ID, params, MSG."""
    text = message.decode()
    parts = text.split(" ", 6)
    header, rest = parts[:6], parts[6]
    assert rest.startswith("[")
    pos = 1
    sd_end = rest.index(" ", pos)
    sd_id = rest[pos:sd_end] if rest[sd_end - 1] != "]" else rest[pos : sd_end - 1]
    params: dict[str, str] = {}
    pos = len("[") + len(sd_id)
    while rest[pos] == " ":
        eq = rest.index("=", pos)
        name = rest[pos + 1 : eq]
        assert rest[eq + 1] == '"'
        i, value = eq + 2, []
        while rest[i] != '"':
            if rest[i] == "\\" and rest[i + 1] in '"\\]':
                value.append(rest[i + 1])
                i += 2
            else:
                assert rest[i] != "]", "unescaped ] inside a PARAM-VALUE"
                value.append(rest[i])
                i += 1
        params[name] = "".join(value)
        pos = i + 1
    assert rest[pos] == "]"
    assert rest[pos + 1] == " "
    return header, sd_id, params, rest[pos + 2 :]


def test_header_fields_and_msg() -> None:
    event = make_event(3, target="node/web-1", session_id="s-1")
    header, sd_id, params, msg = parse(format_message(event, "auth-1"))
    assert header == [
        "<86>1",
        "2026-11-24T12:00:03.123456Z",
        "auth-1",
        "bastion",
        "-",
        "user.login",
    ]
    assert sd_id == SD_ID
    assert params["code"] == "T1000I"
    assert params["id"] == event.id
    assert params["user"] == "user3"
    assert params["target"] == "node/web-1"
    assert json.loads(msg) == event.model_dump(mode="json")
    assert format_message(event, "h").isascii()


def test_failure_is_warning_and_facility_sets_pri() -> None:
    failed = make_event(1, outcome="failure")
    assert severity_of(failed) == 4
    assert format_message(failed, "h", FACILITIES["local0"]).startswith(b"<132>1 ")
    assert format_message(make_event(1), "h", FACILITIES["auth"]).startswith(b"<38>1 ")
    with pytest.raises(ValueError, match="0..23"):
        format_message(failed, "h", 24)


def test_header_fields_are_printable_ascii_and_bounded() -> None:
    event = make_event(1, type="x" * 40 + ".event")
    header, _, _, _ = parse(format_message(event, "host with spaces é"))
    assert header[2] == "host_with_spaces__"
    assert header[5] == "x" * 32
    assert parse(format_message(make_event(1), ""))[0][2] == "-"


def test_sd_escaping_examples() -> None:
    assert escape_sd_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert escape_sd_value("plain") == "plain"


@given(st.text())
def test_any_sd_value_round_trips(value: str) -> None:
    event = make_event(1, user=value, reason=value)
    _, _, params, msg = parse(format_message(event, "h"))
    assert params.get("user", "") == value
    assert json.loads(msg)["user"] == value


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.data())
def test_frames_split_back_under_any_chunking(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    got: list[bytes] = []
    pending = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        done, pending = split_frames(pending + stream[start:end])
        got.extend(done)
    assert got == messages
    assert pending == b""


@pytest.mark.parametrize("garbage", [b"abc 1", b"01 x", b"12345678901 x", b"x"])
def test_split_rejects_non_octet_counted(garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        split_frames(garbage)


def test_frame_counts_octets_not_characters() -> None:
    assert frame("é".encode()) == b"2 \xc3\xa9"
    assert split_frames(b"3 abc4 de") == ([b"abc"], b"4 de")
