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


def test_short_and_incompressible_frames_go_as_they_are() -> None:
    writer = FrameWriter()
    short = mysql.build_packet(1, b"x" * (MIN_COMPRESS - 5))
    assert writer.frames(short) == _frame(short, 0, 0)
    noise = mysql.build_packet(2, os.urandom(500))
    assert writer.frames(noise) == _frame(noise, 1, 0)
    text = mysql.build_packet(3, b"a" * 500)
    framed = writer.frames(text)
    assert framed[3] == 2 and int.from_bytes(framed[4:7], "little") == len(text)
    assert zlib.decompress(framed[HEADER_LENGTH:]) == text


def test_frames_end_at_packet_boundaries_and_sequence_ids_wrap() -> None:
    """Small packets are gathered up to a slice; a longer one is a frame of its own, sent
    once it is whole (a client may read only one more frame to finish a packet)."""
    writer = FrameWriter()
    writer.seq = 254
    rows = [mysql.build_packet(n, b"r" * 1000) for n in range(100)]  # ~100 KB of rows
    big = mysql.build_packet(100, os.urandom(200_000))
    stream = b"".join(rows) + big
    framed = writer.frames(stream[:-1000])  # the big packet is not whole yet
    assert writer.pending == len(big) - 1000
    framed += writer.frames(stream[-1000:])
    assert writer.pending == 0
    reader = FrameReader()
    reader.feed(framed)
    frames, seqs = _read_all(reader), []
    reader = FrameReader()
    reader.feed(framed)
    while reader.next() is not None:
        seqs.append(reader.last_seq)
    assert b"".join(frames) == stream
    assert [len(f) for f in frames] == [65 * 1004, 35 * 1004, len(big)]
    assert len(frames[0]) <= SLICE and seqs == [254, 255, 0] and writer.seq == 1


def test_a_full_packet_is_two_frames() -> None:
    full = mysql.build_packet(0, b"\0" * 0xFFFFFF)[: 4 + 0xFFFFFF]  # its empty tail apart
    framed = FrameWriter().frames(full)
    reader = FrameReader()
    reader.feed(framed)
    frames = _read_all(reader)
    assert [len(f) for f in frames] == [0xFFFFFF, 4] and b"".join(frames) == full


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


_STREAMS = st.lists(
    st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 3, 60, 1000, 70_000])).map(
        lambda t: mysql.build_packet(t[0], bytes([t[0]]) * t[1])
    ),
    max_size=12,
)
"""Packet streams: empty, short, long and longer-than-a-slice packets."""


@settings(max_examples=300, deadline=None)
@given(_STREAMS, st.lists(st.integers(1, 90_000), max_size=20))
def test_any_packet_stream_round_trips_in_any_pieces_and_frames_start_packets(
    packets: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(packets)
    writer, framed, pos = FrameWriter(), b"", 0
    for cut in [*cuts, len(stream)]:
        framed += writer.frames(stream[pos : pos + cut])
        pos += cut
    assert writer.pending == 0
    reader = FrameReader()
    reader.feed(framed)
    frames = _read_all(reader)
    assert b"".join(frames) == stream
    starts = {sum(len(p) for p in packets[:n]) for n in range(len(packets))}
    at = 0
    for frame in frames:
        assert at in starts
        at += len(frame)


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
