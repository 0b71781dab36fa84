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
"""The plain bytes per frame the proxy sends: a result set reaches the client frame by frame
as it streams (a client decompresses each frame whole before it reads a row of it)."""
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
    """Frames plain bytes for a client that reads compressed; ``seq`` is the next frame's
    compressed sequence id (the reader of the other direction sets it: the answer to a frame
    numbered n starts at n + 1)."""

    def __init__(self) -> None:
        self.seq = 0

    def frames(self, data: bytes) -> bytes:
        """``data`` as frames of at most :data:`SLICE` plain bytes each."""
        if len(data) <= SLICE:
            return self._frame(data)
        view = memoryview(data)
        return b"".join(
            self._frame(bytes(view[pos : pos + SLICE])) for pos in range(0, len(data), SLICE)
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
