"""Tests for bastion.protocols.mysql_compress: frames round trip whatever the split, short and
incompressible slices go as they are, sequence ids run and wrap, and any bytes at all give
frames or a one-line protocol error."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.protocols import mysql
from bastion.protocols.mysql_compress import (
    HEADER_LENGTH,
    MIN_COMPRESS,
    SLICE,
    FrameReader,
    FrameWriter,
)


def _read_all(reader: FrameReader) -> list[bytes]:
    out = []
    while (plain := reader.next()) is not None:
        out.append(plain)
    return out


def _frame(body: bytes, seq: int, plain_length: int) -> bytes:
    return (
        len(body).to_bytes(3, "little") + bytes([seq]) + plain_length.to_bytes(3, "little") + body
    )


def test_a_packet_stream_round_trips_fed_a_byte_at_a_time() -> None:
    stream = mysql.build_packet(0, b"\x03" + b"select 'bastion' " * 20) + mysql.build_packet(
        0, b"\x0e"
    )
    framed = FrameWriter().frames(stream)
    assert len(framed) < len(stream)  # compressed
    reader = FrameReader()
    got = b""
    for n in range(len(framed)):
        reader.feed(framed[n : n + 1])
        got += b"".join(_read_all(reader))
    assert got == stream and reader.buffered == 0 and reader.last_seq == 0


def test_short_and_incompressible_slices_go_as_they_are() -> None:
    writer = FrameWriter()
    short = b"x" * (MIN_COMPRESS - 1)
    assert writer.frames(short) == _frame(short, 0, 0)
    noise = os.urandom(500)
    assert writer.frames(noise) == _frame(noise, 1, 0)
    text = b"a" * 500
    framed = writer.frames(text)
    assert framed[3] == 2 and int.from_bytes(framed[4:7], "little") == 500
    assert zlib.decompress(framed[HEADER_LENGTH:]) == text


def test_long_data_is_sliced_and_sequence_ids_wrap() -> None:
    writer = FrameWriter()
    writer.seq = 254
    data = b"".join(n.to_bytes(4, "little") for n in range(SLICE // 2))  # two slices
    reader = FrameReader()
    reader.feed(writer.frames(data))
    first = reader.next()
    assert reader.last_seq == 254
    second = reader.next()
    assert reader.last_seq == 255 and reader.next() is None
    assert first is not None and second is not None
    assert len(first) == SLICE and first + second == data and writer.seq == 0


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (_frame(b"not zlib at all", 0, 100), "not zlib data"),
        (_frame(zlib.compress(b"a" * 100), 0, 99), "does not inflate to the 99 bytes"),
        (_frame(zlib.compress(b"a" * 100), 0, 101), "does not inflate to the 101 bytes"),
        (_frame(zlib.compress(b"a" * 100)[:-2], 0, 100), "does not inflate"),
    ],
)
def test_a_body_that_does_not_inflate_as_declared_is_a_protocol_error(
    frame: bytes, words: str
) -> None:
    reader = FrameReader()
    reader.feed(frame)
    with pytest.raises(RemoteProtocolError, match=words):
        reader.next()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 400), max_size=20))
def test_any_data_round_trips_in_any_pieces(data: bytes, cuts: list[int]) -> None:
    framed = FrameWriter().frames(data)
    reader = FrameReader()
    got, pos = b"", 0
    for cut in [*cuts, len(framed)]:
        reader.feed(framed[pos : pos + cut])
        pos += cut
        got += b"".join(_read_all(reader))
    assert got == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_frames_or_a_protocol_error(data: bytes) -> None:
    reader = FrameReader()
    reader.feed(data)
    try:
        for plain in _read_all(reader):
            assert len(plain) <= 0xFFFFFF
    except RemoteProtocolError as exc:
        assert "\n" not in str(exc)
