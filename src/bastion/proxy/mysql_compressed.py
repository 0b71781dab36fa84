"""The transport of a MySQL client that reads compressed (``CLIENT_COMPRESS``).

Layer: ``proxy`` (IO shell). Installed in place of the client's transport on its relay side
(:meth:`bastion.proxy.db_route.DbRoute.handle_mysql`), so that every write to the client
leaves as frames (:class:`~bastion.protocols.mysql_compress.FrameWriter`): the database's
answers, the proxy's own ERR packets (refusals, protocol errors, a lock's goodbye). The
writer passes the first packet, the handshake's answer, as it is: compression starts after it.
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

    def write(self, data: bytes) -> None:
        framed = self._writer.frames(data)
        if framed:
            self._transport.write(framed)

    def resume_reading(self) -> None:
        self._transport.resume_reading()
        self._on_resume()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
