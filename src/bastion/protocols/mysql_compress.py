"""MySQL's compressed protocol (``CLIENT_COMPRESS``), sans-IO.

Layer: ``protocols`` (pure). Once a client that asked for compression got the server's OK to
its handshake, both directions are a stream of *frames*, each carrying a slice of the ordinary
packet stream (a slice may hold several packets, or part of one)::

    3 bytes  length of the body
    1 byte   compressed sequence id (0 at each command, +1 per frame, either way)
    3 bytes  length of the body once uncompressed; 0: the body is not compressed
    body     zlib data (or the slice as it is)

The proxy ends compression at itself: it reads the client's frames (:class:`FrameReader`),
relays plain packets to the database (the agent's leg never asks for compression, see
:func:`bastion.protocols.mysql.negotiate`) and frames what goes back
(:class:`FrameWriter`), so every command is read and audited as without compression.
"""

from __future__ import annotations

import zlib
from typing import Final

from bastion.errors import RemoteProtocolError

__all__ = ["FrameReader", "FrameWriter", "HEADER_LENGTH"]

HEADER_LENGTH: Final = 7
MIN_COMPRESS: Final = 50
"""Slices shorter than this go uncompressed (as MySQL's servers send them: zlib would grow
them)."""
SLICE: Final = 1 << 16
"""The plain bytes of whole packets per frame the proxy gathers at most: a result set reaches
the client frame by frame as it streams (a client decompresses each frame whole before it
reads a row of it). A longer packet is a frame of its own."""
MAX_FRAME: Final = 0xFFFFFF
"""The most plain bytes one frame can say it holds (3 bytes)."""
LEVEL: Final = 1
"""zlib level of the proxy's frames: most of level 6's size for a fraction of its CPU (the
proxy's one event loop compresses for every compressed session)."""


class FrameReader:
    """Cuts a compressed stream into frames and gives each one's plain bytes, one frame at a
    time (:meth:`next`), so that a little input never becomes a lot of memory at once (zlib
    expands up to ~1000:1; one frame's slice is at most 16 MiB)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.last_seq = -1
        """Compressed sequence id of the last frame read (-1: none yet)."""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> bytes | None:
        """The plain bytes of the next whole frame (None: no whole frame buffered).

        Raises:
            RemoteProtocolError: a body that is not zlib data, or does not inflate to the
                length its header says.
        """
        buf = self._buffer
        if len(buf) < HEADER_LENGTH:
            return None
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        end = HEADER_LENGTH + length
        if len(buf) < end:
            return None
        plain_length = buf[4] | buf[5] << 8 | buf[6] << 16
        body = bytes(buf[HEADER_LENGTH:end])
        self.last_seq = buf[3]
        del buf[:end]
        if not plain_length:
            return body
        inflater = zlib.decompressobj()
        try:
            plain = inflater.decompress(body, plain_length)
        except zlib.error as exc:
            raise RemoteProtocolError(f"compressed packet is not zlib data: {exc}") from None
        if len(plain) != plain_length or inflater.unconsumed_tail or not inflater.eof:
            raise RemoteProtocolError(
                f"compressed packet does not inflate to the {plain_length} bytes it declares"
            )
        return plain


class FrameWriter:
    """Frames a packet stream for a client that reads compressed; ``seq`` is the next
    frame's compressed sequence id (the reader of the other direction sets it: the answer to
    a frame numbered n starts at n + 1).

    Frames end at packet boundaries, as MySQL's servers write them: a frame holds whole
    packets (up to :data:`SLICE` bytes of them), and a longer packet goes alone in one frame
    (two for a full 16 MiB packet, whose header makes it 4 bytes too long for one). Some
    clients rely on it: MySQL Connector/Python reads at most one more frame to finish a
    packet. A packet's start waits here until the rest of it is written.

    Args:
        plain_packets: the first packets that go as they are, unframed (the handshake's
            answer: compression starts after it).
    """

    def __init__(self, plain_packets: int = 0) -> None:
        self.seq = 0
        self._pending = bytearray()
        self._plain = plain_packets

    @property
    def pending(self) -> int:
        """Bytes of an unfinished packet waiting for the rest."""
        return len(self._pending)

    def frames(self, data: bytes) -> bytes:
        """The frames of the packets ``data`` completes (with what was pending)."""
        if self._pending:
            self._pending += data
            buf: bytes | bytearray = self._pending
        else:
            buf = data
        out: list[bytes] = []
        start = pos = 0  # the frame being gathered: buf[start:pos]
        size = len(buf)
        while size - pos >= 4:
            end = pos + 4 + (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16)
            if end > size:
                break
            if self._plain:  # before anything is framed
                out.append(bytes(buf[pos:end]))
                self._plain -= 1
                start = pos = end
                continue
            if end - start > SLICE and pos > start:  # this packet would make it too long
                out.append(self._frame(bytes(buf[start:pos])))
                start = pos
            pos = end
            if pos - start >= SLICE:
                out.append(self._frames_of(bytes(buf[start:pos])))
                start = pos
        if pos > start:
            out.append(self._frames_of(bytes(buf[start:pos])))
        if buf is self._pending:
            del self._pending[:pos]  # (nothing moves while a long packet is still coming)
        elif pos < size:
            self._pending = bytearray(buf[pos:])
        return b"".join(out)

    def _frames_of(self, plain: bytes) -> bytes:
        """One frame, or two for more than a frame can say (a full 16 MiB packet)."""
        if len(plain) <= MAX_FRAME:
            return self._frame(plain)
        return b"".join(
            self._frame(plain[pos : pos + MAX_FRAME]) for pos in range(0, len(plain), MAX_FRAME)
        )

    def _frame(self, plain: bytes) -> bytes:
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        if len(plain) >= MIN_COMPRESS:
            packed = zlib.compress(plain, LEVEL)
            if len(packed) < len(plain):
                return _header(len(packed), seq, len(plain)) + packed
        return _header(len(plain), seq, 0) + plain


def _header(length: int, seq: int, plain_length: int) -> bytes:
    return length.to_bytes(3, "little") + bytes((seq,)) + plain_length.to_bytes(3, "little")
