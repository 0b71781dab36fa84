"""Web terminals the proxy holds: the SSH session outlives a WebSocket for a short grace period.

Layer: web (IO shell over asyncssh channels; no sockets of its own). A browser's WebSocket may
drop (a network blip, a laptop lid) while the SSH session on the node is fine. The proxy keeps
each terminal's SSH connection in a :class:`HeldTerminal`: its output pumps run for the
terminal's whole life and write to the attached WebSocket, or, while none is attached, into a
bounded buffer (the newest :data:`BUFFER_LIMIT` bytes). When the page reconnects with the
terminal's id (``resume=ID``) within :data:`GRACE` seconds, the buffer is replayed and the
shell is exactly where it was; after that the session is ended.

A terminal's id is a random secret bound to the web session that opened it (a hash of the
session cookie): another session, even the same user's, cannot attach to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any, Final, Protocol

import structlog

from bastion.services.credentials import new_secret, secrets_equal

__all__ = [
    "BUFFER_LIMIT",
    "GRACE",
    "HeldTerminal",
    "HeldTerminals",
    "Sink",
    "TailBuffer",
    "owner_key",
]

log = structlog.get_logger("bastion.web.held")

GRACE: Final = 30.0
"""Seconds a terminal without a WebSocket is kept before its SSH session is ended."""
BUFFER_LIMIT: Final = 1024 * 1024
"""Output kept while no WebSocket is attached (the newest bytes; older ones are dropped)."""
READ_SIZE: Final = 64 * 1024
"""The most output sent as one WebSocket frame."""
BULK_CHUNK: Final = 1024
"""A read at least this big is bulk output (a keystroke's echo is a few bytes): more is awaited
for :data:`COALESCE_WAIT` before the frame goes out."""
COALESCE_WAIT: Final = 0.004
"""How long bulk output may wait for more to fill its frame. A node's pty yields 4 KiB a read:
one WebSocket frame each costs the browser more than xterm.js's rendering of it, so bulk output
goes out in frames of up to :data:`READ_SIZE`, at most this much later (never an echo)."""


def owner_key(session_cookie: str) -> str:
    """What binds a terminal to the web session that opened it (never the cookie itself)."""
    return hashlib.sha256(b"web-terminal\0" + session_cookie.encode()).hexdigest()


class Sink(Protocol):
    """Where output goes (an aiohttp ``WebSocketResponse``)."""

    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class TailBuffer:
    """The newest ``limit`` bytes written, and whether older ones were dropped."""

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = False

    def write(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.dropped = True

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        self.dropped = False
        return out


async def _more(reader: Reader, room: int, wait: float = COALESCE_WAIT) -> bytes:
    """What else ``reader`` gives within ``wait`` seconds, up to ``room`` bytes (an interrupted
    read of an asyncssh stream takes nothing: it only waits while its buffer is empty)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    parts: list[bytes] = []
    while room > 0:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await reader.read(room)
        except TimeoutError:
            break
        if not chunk:  # end of output: the next read says so again
            break
        parts.append(chunk)
        room -= len(chunk)
    return b"".join(parts)


class HeldTerminal:
    """One terminal's SSH session, with or without a WebSocket attached."""

    def __init__(
        self,
        owner: str,
        node: str,
        login: str,
        streams: tuple[Reader, Reader],
        close: Callable[[], None],
        exit_status: Callable[[], int | None],
    ) -> None:
        self.id = new_secret(18)
        self.owner, self.node, self.login = owner, node, login
        self._close, self._exit_status = close, exit_status
        self.conn: Any = None
        """The SSH connection (asyncssh), for SFTP through the same session."""
        self.process: Any = None
        """The shell's process (asyncssh): its stdin and terminal size."""
        self.buffer = TailBuffer()
        self.coalesce_wait = COALESCE_WAIT
        self.ended = asyncio.Event()
        self.reason = ""
        self._sink: Sink | None = None
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._pumps = [asyncio.ensure_future(self._pump(s)) for s in streams]
        self._done = asyncio.ensure_future(self._wait_pumps())

    async def _pump(self, reader: Reader) -> None:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            if len(data) >= BULK_CHUNK:
                data += await _more(reader, READ_SIZE - len(data), self.coalesce_wait)
            async with self._lock:
                await self._deliver(data)

    async def _deliver(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None and not sink.closed:
            try:
                await sink.send_bytes(data)
                return
            except (ConnectionError, RuntimeError):
                pass  # the WebSocket is going away: its handler releases the terminal
        self.buffer.write(data)

    async def _wait_pumps(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pumps)
        self.end("the session ended")

    def end(self, reason: str) -> None:
        """End the SSH session (idempotent); ``reason`` is what the page is told."""
        if self.ended.is_set():
            return
        status = self._exit_status()
        self.reason = f"{reason} (exit status {status})" if status is not None else reason
        if self._timer is not None:
            self._timer.cancel()
        for pump in self._pumps:
            pump.cancel()
        self._close()
        self.ended.set()

    async def attach(self, sink: Sink) -> None:
        """Send what was buffered, then live output, to ``sink``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            dropped = self.buffer.dropped
            pending = self.buffer.take()
            if dropped:
                pending = b"\r\n[older output was dropped while disconnected]\r\n" + pending
            self._sink = sink
            if pending:
                await self._deliver(pending)

    def detach(self, sink: Sink, grace: float, on_expiry: Callable[[], None]) -> None:
        """The WebSocket is gone: keep the session for ``grace`` seconds (unless another
        WebSocket already took over: a reconnect the server learns of before the old one's
        end)."""
        if self._sink is not sink or self.ended.is_set():
            return
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(grace, on_expiry)

    @property
    def attached(self) -> bool:
        return self._sink is not None


class HeldTerminals:
    """The proxy's live web terminals by id."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self._by_id: dict[str, HeldTerminal] = {}

    def add(self, terminal: HeldTerminal) -> None:
        self._by_id[terminal.id] = terminal
        asyncio.ensure_future(self._forget_when_ended(terminal))

    async def _forget_when_ended(self, terminal: HeldTerminal) -> None:
        await terminal.ended.wait()
        self._by_id.pop(terminal.id, None)

    def find(self, terminal_id: str, owner: str) -> HeldTerminal | None:
        """The terminal with this id when it belongs to ``owner`` (else None, the same answer
        as for an id that never existed)."""
        terminal = self._by_id.get(terminal_id)
        if terminal is None or not secrets_equal(terminal.owner, owner):
            return None
        return terminal

    def release(self, terminal: HeldTerminal, sink: Sink) -> None:
        """The WebSocket dropped without the session ending: hold it for the grace period."""

        def expire() -> None:
            if not terminal.attached:
                log.info("web terminal not resumed in time", node=terminal.node)
                terminal.end("nobody reconnected within the grace period")

        terminal.detach(sink, self.grace, expire)

    def __len__(self) -> int:
        return len(self._by_id)
