"""Held web terminals: output is buffered while no WebSocket is attached and replayed on
reconnect; a terminal is found only by the web session that opened it."""

from __future__ import annotations

import asyncio

from bastion.web.held import HeldTerminal, HeldTerminals, TailBuffer, owner_key


class FakeStream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self, n: int = -1) -> bytes:
        return await self.queue.get()


class FakeSink:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


def test_tail_buffer_keeps_the_newest_bytes() -> None:
    buf = TailBuffer(limit=4)
    buf.write(b"abc")
    assert not buf.dropped
    buf.write(b"def")
    assert buf.dropped and buf.take() == b"cdef"
    assert buf.take() == b"" and not buf.dropped


def test_owner_key_is_not_the_cookie() -> None:
    assert owner_key("secret") != "secret" and owner_key("a") != owner_key("b")


async def test_output_is_buffered_while_detached_and_replayed() -> None:
    out, err = FakeStream(), FakeStream()
    closed: list[bool] = []
    held = HeldTerminal("me", "n1", "root", (out, err), lambda: closed.append(True), lambda: 0)
    registry = HeldTerminals(grace=3600)
    registry.add(held)
    sink = FakeSink()
    await held.attach(sink)
    out.queue.put_nowait(b"one")
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.sent == [b"one"]
    registry.release(held, sink)
    out.queue.put_nowait(b"two")
    for _ in range(5):
        await asyncio.sleep(0)
    assert registry.find(held.id, "someone else") is None
    assert registry.find(held.id, "me") is held
    again = FakeSink()
    await held.attach(again)
    assert again.sent == [b"two"]
    out.queue.put_nowait(b"")
    err.queue.put_nowait(b"")
    await held.ended.wait()
    assert closed and held.reason == "the session ended (exit status 0)"
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(registry) == 0


class ChunkStream:
    """A reader over queued chunks that honours ``n`` (as an asyncssh stream does)."""

    def __init__(self, *chunks: bytes) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.rest = b""
        for chunk in chunks:
            self.queue.put_nowait(chunk)

    async def read(self, n: int = -1) -> bytes:
        if not self.rest:
            self.rest = await self.queue.get()
        out, self.rest = self.rest[:n], self.rest[n:]
        return out


async def test_bulk_output_is_coalesced_into_large_frames_and_an_echo_is_not() -> None:
    from bastion.web.held import READ_SIZE, _more

    stream = ChunkStream(b"a" * 4096, b"b" * 4096, b"c" * 4096)
    assert await _more(stream, 6000, wait=0) == b"a" * 4096 + b"b" * 1904
    assert await _more(stream, READ_SIZE, wait=0) == b"b" * 2192 + b"c" * 4096
    assert await _more(stream, READ_SIZE, wait=0) == b""  # nothing more came in time

    out = ChunkStream(b"x" * 4096, b"y" * 4096, b"z" * 4096)
    err = ChunkStream()
    held = HeldTerminal("me", "n1", "root", (out, err), lambda: None, lambda: None)
    held.coalesce_wait = 0
    sink = FakeSink()
    await held.attach(sink)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.sent == [b"x" * 4096 + b"y" * 4096 + b"z" * 4096]
    out.queue.put_nowait(b"k")  # a keystroke's echo goes at once, alone
    out.queue.put_nowait(b"l")
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.sent[1:] == [b"k", b"l"]
    held.end("test")
