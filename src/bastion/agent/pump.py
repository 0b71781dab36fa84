"""A byte pump between two transports (an agent's tunnel stream and its upstream connection).

Layer: ``agent``. Bytes go straight from one transport to the other, with back-pressure both
ways (a full writer pauses the other side's reading); either end closing closes both and
resolves ``done``. Bytes that arrive before the other side is connected wait in ``pending``.
"""

from __future__ import annotations

import asyncio

from bastion.runtime import as_transport

__all__ = ["Pump", "pump_pair"]


class Pump(asyncio.Protocol):
    """One side of the pump."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pump | None = None
        self.done = done
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        elif not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def finish(self) -> None:
        for side in (self, self.peer):
            if side is not None and side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        if not self.done.done():
            self.done.set_result(None)


def pump_pair(done: asyncio.Future[None]) -> tuple[Pump, Pump]:
    """Two connected sides sharing ``done``."""
    a, b = Pump(done), Pump(done)
    a.peer, b.peer = b, a
    return a, b
