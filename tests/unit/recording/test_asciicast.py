from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.recording.asciicast import (
    CastEncoder,
    CastEvent,
    CastHeader,
    parse_cast,
    parse_header,
)


def _encode(chunks: list[tuple[float, str, bytes]], header: CastHeader) -> bytes:
    enc = CastEncoder(header)
    out = enc.start()
    end = 0.0
    for t, code, data in chunks:
        end = max(end, t)
        out += enc.output(t, data) if code == "o" else enc.input(t, data)
    return out + enc.finish(end)


def test_header_and_events_have_the_v2_shape() -> None:
    header = CastHeader(80, 24, 1_700_000_000, {"TERM": "xterm", "SHELL": "/bin/bash"}, "s1")
    enc = CastEncoder(header)
    lines = [enc.start(), enc.output(0.5, b"hi\n"), enc.resize(1.0, 100, 40), enc.input(2, b"q")]
    text = b"".join(lines).decode().splitlines()
    assert json.loads(text[0]) == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1_700_000_000,
        "env": {"TERM": "xterm", "SHELL": "/bin/bash"},
        "title": "s1",
    }
    assert [json.loads(x) for x in text[1:]] == [[0.5, "o", "hi\n"], [1.0, "r", "100x40"],
                                                 [2.0, "i", "q"]]  # fmt: skip
    cast = parse_cast("\n".join(text).encode())
    assert cast.header == header
    assert cast.events[1].resize() == (100, 40)
    assert cast.duration == 2.0


def test_a_character_split_across_chunks_is_kept_whole() -> None:
    enc = CastEncoder(CastHeader(80, 24))
    euro = "€".encode()
    assert enc.output(0.1, b"a" + euro[:1]) == b'[0.1, "o", "a"]\n'
    assert enc.output(0.2, euro[1:2]) == b""  # still incomplete: nothing yet
    assert enc.output(0.3, euro[2:] + b"b") == '[0.3, "o", "€b"]\n'.encode()
    assert enc.finish(0.4) == b""


def test_time_never_goes_backwards_and_bad_times_are_clamped() -> None:
    enc = CastEncoder(CastHeader(80, 24))
    enc.start()
    times = [json.loads(enc.output(t, b"x"))[0] for t in (1.0, 0.5, float("nan"), -3, 2.0000004)]
    assert times == [1.0, 1.0, 1.0, 1.0, 2.0]


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.sampled_from(["o", "i"]),
            st.binary(max_size=40),
        ),
        max_size=30,
    ),
    st.integers(1, 500),
    st.integers(1, 500),
    st.dictionaries(st.sampled_from(["TERM", "SHELL"]), st.text(max_size=10)),
    st.text(max_size=20),
)
def test_round_trip(
    chunks: list[tuple[float, str, bytes]], w: int, h: int, env: dict[str, str], title: str
) -> None:
    header = CastHeader(w, h, 1_600_000_000, env, title)
    cast = parse_cast(_encode(chunks, header))
    assert cast.header == header
    out = b"".join(d for _, c, d in chunks if c == "o")
    inp = b"".join(d for _, c, d in chunks if c == "i")
    assert cast.output() == out.decode("utf-8", errors="replace")
    assert cast.input() == inp.decode("utf-8", errors="replace")
    times = [e.time for e in cast.events]
    assert times == sorted(times)


@given(st.binary(max_size=200))
def test_parser_raises_only_bad_parameter(data: bytes) -> None:
    try:
        parse_cast(data)
    except BadParameter:
        pass


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b'{"version": 1, "width": 80, "height": 24}',
        b'{"version": 2, "width": -1, "height": 24}',
        b'{"version": 2, "width": 80, "height": 24, "env": {"A": 1}}',
        b'{"version": 2, "width": 80, "height": 24}\n[1, "x", "a"]',
        b'{"version": 2, "width": 80, "height": 24}\n[-1, "o", "a"]',
        b'{"version": 2, "width": 80, "height": 24}\n[1, "o"]',
        b'{"version": 2, "width": 80, "height": 24}\nnot json',
    ],
)
def test_malformed_recordings_are_refused(data: bytes) -> None:
    with pytest.raises(BadParameter):
        parse_cast(data)


def test_resize_of_a_non_resize_event_is_refused() -> None:
    with pytest.raises(BadParameter):
        CastEvent(1.0, "o", "80x24").resize()
    assert parse_header(b'{"version": 2, "width": 3, "height": 4}').env == {}


@given(st.floats(0, 1e7, allow_nan=False), st.sampled_from(["o", "i"]), st.text(min_size=1))
def test_event_lines_are_what_json_dumps_writes(t: float, code: str, text: str) -> None:
    enc = CastEncoder(CastHeader(80, 24))
    line = enc.output(t, text.encode()) if code == "o" else enc.input(t, text.encode())
    expected = [float(round(t, 6)), code, text]
    assert (
        line == json.dumps(expected, ensure_ascii=False, separators=(", ", ": ")).encode() + b"\n"
    )
