"""MuxSession and MuxStream over an in-memory transport pair (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.testing.pipes import Pipe, pipe_pair
from bastion.tunnel.session import MuxSession, MuxStream


class Collector(asyncio.Protocol):
    def __init__(self, echo: bool = False, keep_open_on_eof: bool = True) -> None:
        self.echo = echo
        self.keep_open_on_eof = keep_open_on_eof
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.eof = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost_exc: Exception | None = None
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof.set()
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        self.lost.set()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


async def make_sessions(
    on_stream: Any = None, **kwargs: Any
) -> tuple[MuxSession, MuxSession, Pipe, Pipe]:
    proxy_end, agent_end = pipe_pair()
    server = MuxSession("server", **kwargs)
    client = MuxSession("client", on_stream=on_stream, **kwargs)
    proxy_end.set_protocol(server)
    agent_end.set_protocol(client)
    server.connection_made(proxy_end)
    client.connection_made(agent_end)
    return server, client, proxy_end, agent_end


async def until(predicate: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)


async def test_open_stream_echo_and_peername() -> None:
    accepted: list[tuple[MuxStream, dict[str, Any]]] = []

    def on_stream(stream: MuxStream, header: dict[str, Any]) -> None:
        accepted.append((stream, header))
        stream.attach(Collector(echo=True))

    server, _client, _, _ = await make_sessions(on_stream)
    mine = Collector()
    stream = server.open_stream({"type": "ssh", "client_addr": "192.0.2.7:41000"})
    stream.attach(mine)
    stream.write(b"hello ")
    stream.writelines([b"mux", b"!"])
    await until(lambda: bytes(mine.data) == b"hello mux!")
    remote, header = accepted[0]
    assert header["type"] == "ssh"
    assert remote.get_extra_info("peername") == ("192.0.2.7", 41000)
    assert remote.get_extra_info("header") == header
    assert isinstance(stream, asyncio.Transport)


async def test_flow_control_pauses_writer_and_bounds_receiver() -> None:
    receivers: list[Collector] = []

    def on_stream(stream: MuxStream, header: dict[str, Any]) -> None:
        receiver = Collector()
        receivers.append(receiver)
        stream.attach(receiver)
        stream.pause_reading()  # a slow consumer

    server, client, _, _ = await make_sessions(on_stream, initial_window=64 * 1024)
    writer = Collector()
    stream = server.open_stream({})
    stream.attach(writer)
    stream.set_write_buffer_limits(high=128 * 1024)
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream.write(payload)
    await until(lambda: writer.paused == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    remote = client.streams[0]
    queued = sum(len(chunk) for chunk in remote._recv)
    assert queued <= 64 * 1024  # never more than one window buffered at the slow side
    assert receivers[0].data == b""
    remote.resume_reading()
    await until(lambda: len(receivers[0].data) == len(payload))
    assert bytes(receivers[0].data) == payload
    assert writer.resumed == 1


async def test_half_close_both_directions() -> None:
    remote = Collector(keep_open_on_eof=True)

    def on_stream(stream: MuxStream, header: dict[str, Any]) -> None:
        stream.attach(remote)

    server, _client, _, _ = await make_sessions(on_stream)
    mine = Collector()
    stream = server.open_stream({})
    stream.attach(mine)
    stream.write(b"request")
    stream.write_eof()
    await remote.eof.wait()
    assert remote.data == b"request"
    assert remote.transport is not None
    remote.transport.write(b"response")
    remote.transport.write_eof()
    await mine.eof.wait()
    assert mine.data == b"response"
    remote.transport.close()
    await asyncio.wait_for(mine.lost.wait(), 2)
    await asyncio.wait_for(remote.lost.wait(), 2)
    assert server.streams == []


async def test_eof_closes_when_protocol_returns_false() -> None:
    remote = Collector(keep_open_on_eof=False)
    server, _, _, _ = await make_sessions(lambda s, h: s.attach(remote))
    mine = Collector()
    stream = server.open_stream({})
    stream.attach(mine)
    stream.write_eof()
    await asyncio.wait_for(mine.lost.wait(), 2)
    assert mine.lost_exc is None


async def test_tunnel_loss_reaches_every_stream() -> None:
    server, _client, proxy_end, _ = await make_sessions(lambda s, h: s.attach(Collector()))
    protocols = [Collector() for _ in range(3)]
    for protocol in protocols:
        server.open_stream({}).attach(protocol)
    await asyncio.sleep(0)
    proxy_end.abort()
    for protocol in protocols:
        await asyncio.wait_for(protocol.lost.wait(), 2)
        assert isinstance(protocol.lost_exc, ConnectionResetError)
    await asyncio.wait_for(server.wait_closed(), 2)
    with pytest.raises(ConnectionResetError):
        server.open_stream({})


async def test_streams_refused_without_handler_or_with_bad_header() -> None:
    server, _client, _, _ = await make_sessions(None)
    mine = Collector()
    server.open_stream({"x": 1}).attach(mine)
    await asyncio.wait_for(mine.lost.wait(), 2)


async def test_abort_sends_close_and_discards() -> None:
    remote = Collector()
    server, _, _, _ = await make_sessions(lambda s, h: s.attach(remote))
    mine = Collector()
    stream = server.open_stream({})
    stream.attach(mine)
    stream.write(b"x")
    stream.abort()
    await asyncio.wait_for(remote.lost.wait(), 2)
    await asyncio.wait_for(mine.lost.wait(), 2)
    assert stream.is_closing()


async def test_drain_refuses_new_streams_and_closes_when_idle() -> None:
    remote = Collector()
    server, client, _, _ = await make_sessions(lambda s, h: s.attach(remote))
    mine = Collector()
    stream = server.open_stream({})
    stream.attach(mine)
    await asyncio.sleep(0)
    server.drain("restart")
    with pytest.raises(Exception, match="GOAWAY"):
        server.open_stream({})
    stream.write(b"still flows")
    await until(lambda: remote.data == b"still flows")
    stream.close()
    await asyncio.wait_for(server.wait_closed(), 2)
    await asyncio.wait_for(client.wait_closed(), 2)


async def test_async_stream_handler_is_tracked() -> None:
    done = asyncio.Event()

    async def on_stream(stream: MuxStream, header: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        stream.attach(Collector(echo=True))
        done.set()

    server, _, _, _ = await make_sessions(on_stream)
    mine = Collector()
    stream = server.open_stream({})
    stream.attach(mine)
    stream.write(b"queued before the handler attached")
    await asyncio.wait_for(done.wait(), 2)
    await until(lambda: mine.data == b"queued before the handler attached")
