"""An in-memory asyncio transport pair for protocol tests without sockets: bytes written on one
end reach the peer's protocol on the next loop tick; an end can swallow writes (a dead peer)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Pipe", "pipe_pair"]


class Pipe(asyncio.Transport):
    """One end of an in-memory byte pipe; bytes arrive at the peer's protocol on the next tick."""

    def __init__(self, peername: tuple[str, int]) -> None:
        super().__init__(extra={"peername": peername, "sockname": ("127.0.0.1", 1)})
        self.loop = asyncio.get_running_loop()
        self.peer: Pipe | None = None
        self.protocol: asyncio.Protocol | None = None
        self.closed = False
        self.black_hole = False  # swallow writes (a dead peer)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if self.closed or self.black_hole:
            return
        self.loop.call_soon(self.peer_deliver, bytes(data))

    def peer_deliver(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and not peer.closed and peer.protocol is not None:
            peer.protocol.data_received(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        assert self.protocol is not None
        self.loop.call_soon(self.protocol.connection_lost, None)
        if self.peer is not None and not self.black_hole:
            self.loop.call_soon(self.peer.close)

    def abort(self) -> None:
        self.close()


def pipe_pair() -> tuple[Pipe, Pipe]:
    a, b = Pipe(("10.0.0.2", 5000)), Pipe(("10.0.0.1", 3080))
    a.peer, b.peer = b, a
    return a, b
