"""Tests for bastion.proxy.mysql_compressed: the handshake's answer passes as it is (in any
pieces), everything after it leaves in frames, the rest is the wrapped transport's."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.protocols import mysql
from bastion.protocols.mysql_compress import FrameReader, FrameWriter
from bastion.proxy.mysql_compressed import CompressingTransport


class Wrapped:
    def __init__(self) -> None:
        self.written = bytearray()
        self.resumed = 0

    def write(self, data: Any) -> None:
        self.written += data

    def resume_reading(self) -> None:
        self.resumed += 1

    def get_write_buffer_size(self) -> int:
        return 7


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 11])
def test_the_handshakes_answer_passes_then_frames(cut: int) -> None:
    inner = Wrapped()
    resumes: list[int] = []
    transport = CompressingTransport(inner, FrameWriter(plain_packets=1), lambda: resumes.append(1))  # type: ignore[arg-type]
    ok = mysql.ok_packet(2)
    answer = mysql.build_packet(1, b"\x03" + b"select 1 " * 10)
    sent = ok + answer  # an answer written with the OK's last bytes: framed all the same
    transport.write(sent[:cut])
    transport.write(sent[cut:])
    assert inner.written[: len(ok)] == ok
    reader = FrameReader()
    reader.feed(bytes(inner.written[len(ok) :]))
    plain = b""
    while (chunk := reader.next()) is not None:
        plain += chunk
    assert plain == answer and reader.last_seq == 0
    transport.resume_reading()
    assert inner.resumed == 1 and resumes == [1]
    assert transport.get_write_buffer_size() == 7
