"""Port forwarding on the node: local (``-L``, direct-tcpip) and remote (``-R``, tcpip-forward).

Layer: agent IO shell. Each forward is authorized by the same role set as the session
(``port_forwarding`` option), audited (``port_forward`` event with the address), and registered
in the :class:`~bastion.live.registry.LiveRegistry` with a terminator, so a lock ends it like any
session. We pump the bytes ourselves (instead of asyncssh's built-in forwarder) to know when a
forward ends, to close it on demand and to count its bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

from bastion.live.registry import LiveConnection
from bastion.runtime import as_transport

__all__ = ["CONNECT_TIMEOUT", "ForwardSession", "open_direct_tcpip"]

CONNECT_TIMEOUT = 10.0
"""Seconds to reach a direct-tcpip destination before the channel open fails."""


class _Upstream(asyncio.Protocol):
    """The node's TCP connection to the forward's destination."""

    def __init__(self) -> None:
        self.session: ForwardSession | None = None
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.session is None or self.session.chan is None:
            self._early.append(data)  # server-speaks-first protocols; flushed on attach
            return
        self.session.to_client(data)

    def eof_received(self) -> bool:
        if self.session is None or self.session.chan is None:
            self._early_eof = True
        else:
            self.session.chan.write_eof()
        return True  # keep our side open: the client may still send

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.close()

    def attach(self, session: ForwardSession) -> None:
        for chunk in self._early:
            session.to_client(chunk)
        self._early.clear()
        if self._early_eof and session.chan is not None:
            session.chan.write_eof()

    def pause_writing(self) -> None:
        if self.session is not None and self.session.chan is not None:
            self.session.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.session is not None and self.session.chan is not None:
            self.session.chan.resume_reading()


class ForwardSession(asyncssh.SSHTCPSession[bytes]):
    """One forwarded TCP connection: an SSH channel on one side, a socket on the other."""

    def __init__(self, upstream: _Upstream, entry: LiveConnection) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.entry = entry
        self.on_close: Callable[[ForwardSession], None] | None = None
        self._upstream = upstream
        self._closed = False
        upstream.session = self

    # -- channel side (asyncssh callbacks) -----------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self._upstream.attach(self)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.entry.bytes_in += len(data)
        if self._upstream.transport is not None:
            self._upstream.transport.write(data)

    def eof_received(self) -> bool:
        transport = self._upstream.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self._upstream.transport is not None:
            self._upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream.transport is not None:
            self._upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    # -- our side ------------------------------------------------------------------------------

    def to_client(self, data: bytes) -> None:
        self.entry.bytes_out += len(data)
        if self.chan is not None:
            self.chan.write(data)

    def close(self) -> None:
        """Close both sides (idempotent); the registry entry goes away."""
        if self._closed:
            return
        self._closed = True
        if self._upstream.transport is not None:
            self._upstream.transport.close()
        if self.chan is not None:
            self.chan.close()
        if self.on_close is not None:
            self.on_close(self)


async def open_direct_tcpip(host: str, port: int, entry: LiveConnection) -> ForwardSession:
    """Connect to ``host:port`` for a direct-tcpip channel.

    Args:
        host: destination host, as the client asked (resolved by the node).
        port: destination port.
        entry: the registry entry (byte counters are kept on it).

    Returns:
        The channel session to hand back to asyncssh.

    Raises:
        asyncssh.ChannelOpenError: the destination cannot be reached in time (the client sees
            "connect failed").
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, upstream = await loop.create_connection(_Upstream, host, port)
    except (OSError, TimeoutError) as exc:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"cannot connect to {host}:{port}: {exc}"
        ) from None
    return ForwardSession(upstream, entry)
