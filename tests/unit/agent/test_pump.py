"""The byte pump between a tunnel stream and an upstream connection (in-memory transports)."""

from __future__ import annotations

import asyncio

from bastion.agent.pump import pump_pair
from bastion.tunnel.memory import memory_pair


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


def _attach(transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
    transport.set_protocol(protocol)
    protocol.connection_made(transport)


async def test_bytes_flow_both_ways_and_early_bytes_wait() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    a, b = pump_pair(done)
    client, client_side = memory_pair("client")
    upstream_side, upstream = memory_pair("upstream")
    client_peer, upstream_peer = Collect(), Collect()
    _attach(client, client_peer)
    _attach(upstream, upstream_peer)
    _attach(client_side, a)
    a.data_received(b"early ")  # before the upstream is connected: held
    assert a.pending == [b"early "]
    _attach(upstream_side, b)
    for chunk in a.pending:
        upstream_side.write(chunk)
    a.pending.clear()
    client.write(b"hello")
    upstream.write(b"world")
    for _ in range(20):
        await asyncio.sleep(0)
    assert upstream_peer.data == b"early hello" and client_peer.data == b"world"
    client.close()  # one end closing closes both and resolves done
    await asyncio.wait_for(done, 1)
    await asyncio.wait_for(upstream_peer.closed, 1)
