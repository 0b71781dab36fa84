"""An in-memory transport pair: the reverse tunnel of a node that runs in the proxy's own process.

The all-in-one daemon's SSH node would otherwise dial its own proxy over loopback TLS and pay
encryption twice for every byte of every session. With :func:`memory_pair` the node's
MuxSession and the proxy's TunnelServer talk through two connected asyncio Transports instead;
everything above them (framing, flow control, keepalive, the live registry) is unchanged.

Delivery is asynchronous (``call_soon``) so a write never re-enters the peer's protocol, and
honours the peer's ``pause_reading``: bytes wait in a buffer, and the writer is paused (
``pause_writing``) once that buffer passes the high-water mark.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["MemoryTransport", "memory_pair"]

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class MemoryTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__()
        self._loop = loop
        self._name = name
        self._peer: MemoryTransport | None = None
        self._protocol: asyncio.BaseProtocol | None = None
        self._inbox: deque[bytes] = deque()
        self._inbox_size = 0
        self._reading = True
        self._scheduled = False
        self._closing = False
        self._writer_paused = False

    # ---- wiring ---------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ("127.0.0.1", 0)
        if name == "in_process":
            return True
        return default

    # ---- writing (into the peer's inbox) ------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self._peer
        if self._closing or peer is None or peer._closing or not data:
            return
        peer._inbox.append(bytes(data))
        peer._inbox_size += len(data)
        peer._schedule()
        if peer._inbox_size > HIGH_WATER and not self._writer_paused:
            self._writer_paused = True
            if isinstance(self._protocol, asyncio.Protocol):
                self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._peer._inbox_size if self._peer is not None else 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._lost, None)
        if self._peer is not None and not self._peer._closing:
            self._peer._closing = True
            self._loop.call_soon(self._peer._lost, None)

    def abort(self) -> None:
        self.close()

    # ---- reading (from our inbox) -------------------------------------------------------------

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._schedule()

    def is_reading(self) -> bool:
        return self._reading

    def _schedule(self) -> None:
        if not self._scheduled and self._reading and self._inbox:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        protocol = self._protocol
        while self._reading and self._inbox and isinstance(protocol, asyncio.Protocol):
            data = self._inbox.popleft()
            self._inbox_size -= len(data)
            protocol.data_received(data)
        peer = self._peer
        if peer is not None and peer._writer_paused and self._inbox_size <= LOW_WATER:
            peer._writer_paused = False
            if isinstance(peer._protocol, asyncio.Protocol):
                peer._protocol.resume_writing()

    def _lost(self, exc: Exception | None) -> None:
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)


def memory_pair(name: str = "in-process") -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected transports; attach a protocol to each with ``set_protocol`` and call its
    ``connection_made`` yourself (as with any hand-over)."""
    loop = asyncio.get_running_loop()
    a, b = MemoryTransport(loop, f"{name}-a"), MemoryTransport(loop, f"{name}-b")
    a._peer, b._peer = b, a
    return a, b
