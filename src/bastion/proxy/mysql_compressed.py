"""The transport of a MySQL client that reads compressed (``CLIENT_COMPRESS``).

Layer: ``proxy`` (IO shell). Installed in place of the client's transport on its relay side
(:meth:`bastion.proxy.db_route.DbRoute.handle_mysql`), so that every write to the client
leaves as frames (:class:`~bastion.protocols.mysql_compress.FrameWriter`): the database's
answers, the proxy's own ERR packets (refusals, protocol errors, a lock's goodbye). The first
packet, the handshake's answer, passes as it is: compression starts after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion.protocols.mysql_compress import FrameWriter

__all__ = ["CompressingTransport"]


class CompressingTransport:
    """Wraps ``transport``: :meth:`write` frames, :meth:`resume_reading` also calls
    ``on_resume`` (the side reads the frames it buffered), the rest is the transport's."""

    def __init__(
        self, transport: asyncio.Transport, writer: FrameWriter, on_resume: Callable[[], None]
    ) -> None:
        self._transport = transport
        self._writer = writer
        self._on_resume = on_resume
        self._head = bytearray()
        self._answer_left = -1
        """Bytes of the handshake's answer still to pass uncompressed (-1: its header is not
        whole yet; 0: passed, everything else is framed)."""

    def write(self, data: bytes) -> None:
        if self._answer_left:
            plain = self._answer_prefix(data)
            if plain:
                self._transport.write(data[:plain])
                data = data[plain:]
            if not data:
                return
        self._transport.write(self._writer.frames(data))

    def _answer_prefix(self, data: bytes) -> int:
        """How many leading bytes of ``data`` belong to the handshake's answer."""
        taken = 0
        if self._answer_left < 0:
            taken = min(4 - len(self._head), len(data))
            self._head += data[:taken]
            if len(self._head) < 4:
                return taken
            head = self._head
            self._answer_left = head[0] | head[1] << 8 | head[2] << 16
            if not self._answer_left:
                return taken
        rest = min(self._answer_left, len(data) - taken)
        self._answer_left -= rest
        return taken + rest

    def resume_reading(self) -> None:
        self._transport.resume_reading()
        self._on_resume()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
