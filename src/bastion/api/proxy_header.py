"""Accepted sockets: peek without consuming, and the PROXY protocol header of a trusted balancer.

Layer: ``api`` (the network edge; IO). Shared by the proxy's public port
(:mod:`bastion.proxy.listener`) and the auth port (:mod:`bastion.auth_service`), so the rule
"a PROXY header only from ``trusted_proxy_sources``, consumed exactly, at most one" lives once.

Why peek: stdlib ``ssl`` must see the ClientHello itself, so the bytes before the TLS record are
read with ``MSG_PEEK`` and only the PROXY header (its exact length) is consumed. ``SO_RCVLOWAT``
makes the socket readable only once more bytes than already peeked are there, so a slowloris
client costs one wake-up per byte and never a busy loop. The caller holds the deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.errors import RemoteProtocolError
from bastion.protocols.clienthello import MAX_CLIENT_HELLO
from bastion.protocols.detect import Kind, NeedMore, ProxyAddress, detect, parse_proxy_header

__all__ = [
    "MAX_PEEK",
    "ClientAddresses",
    "ProxiedClient",
    "TrustedSources",
    "UntrustedProxyHeader",
    "consume",
    "peek",
    "read_proxy_header",
    "set_lowat",
]

MAX_PEEK = MAX_CLIENT_HELLO + 5 * 16
"""The largest ClientHello plus its record headers."""


class UntrustedProxyHeader(RemoteProtocolError):
    """A PROXY header from a source not in ``trusted_proxy_sources`` (or a second one)."""


class TrustedSources:
    """The CIDRs of load balancers (or proxies) allowed to send a PROXY protocol header."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, ip: object) -> bool:
        try:
            address = ipaddress.ip_address(str(ip))
        except ValueError:
            return False
        return any(address in net for net in self._nets)


@dataclass(frozen=True, slots=True)
class ProxiedClient:
    """What :func:`read_proxy_header` found at the start of a connection."""

    source: ProxyAddress | None
    """The real client (None: no header, or a ``LOCAL`` / ``UNKNOWN`` one)."""
    data: bytes
    """What is peeked after the header (at least one byte)."""
    had_header: bool


class ClientAddresses:
    """The real client address of each connection that arrived with a PROXY header, by its
    transport, so the HTTP app sees the client and not the balancer (``request.remote``).

    Held weakly, by the connection's ``ssl.SSLObject`` when it has one: uvloop's TLS transport
    cannot be weakly referenced, its SSL object (the same one for the connection's life) can."""

    def __init__(self) -> None:
        self._by_transport: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(transport: asyncio.BaseTransport) -> object:
        ssl_object = transport.get_extra_info("ssl_object")
        return transport if ssl_object is None else ssl_object

    def set(self, transport: asyncio.BaseTransport, ip: str) -> None:
        self._by_transport[self._key(transport)] = ip

    def get(self, transport: asyncio.BaseTransport | None) -> str | None:
        if transport is None:
            return None
        return self._by_transport.get(self._key(transport))


async def read_proxy_header(
    sock: socket.socket, peer_ip: str, trusted: TrustedSources, data: bytes | None = None
) -> ProxiedClient:
    """Consume a PROXY v1/v2 header at the start of ``sock`` when there is one.

    Args:
        sock: an accepted non-blocking socket.
        peer_ip: the TCP peer's address (the balancer when there is a header).
        trusted: who may send a header.
        data: bytes already peeked (None: peek now).

    Returns:
        The real client (when the header names one) and the bytes peeked after the header.

    Raises:
        UntrustedProxyHeader: a header from an untrusted source, or a second header.
        RemoteProtocolError: a malformed header. ConnectionResetError: the peer went away.
    """
    data = data if data else await peek(sock, 1)
    found = detect(data)
    while isinstance(found, NeedMore):
        data = await peek(sock, found.at_least)
        found = detect(data)
    if found.kind not in (Kind.PROXY_V1, Kind.PROXY_V2):
        return ProxiedClient(None, data, False)
    if peer_ip not in trusted:
        raise UntrustedProxyHeader(f"PROXY protocol header from an untrusted source {peer_ip}")
    header = parse_proxy_header(data)
    while isinstance(header, NeedMore):
        data = await peek(sock, header.at_least)
        header = parse_proxy_header(data)
    await consume(sock, header.length)
    data = await peek(sock, 1)
    again = detect(data)
    if not isinstance(again, NeedMore) and again.kind in (Kind.PROXY_V1, Kind.PROXY_V2):
        raise UntrustedProxyHeader("a second PROXY protocol header")
    return ProxiedClient(header.source, data, True)


def set_lowat(sock: socket.socket, n: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, n))
    except OSError:
        pass  # not supported: peek falls back to short sleeps


async def _wait_readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def peek(sock: socket.socket, at_least: int) -> bytes:
    """Peek until at least ``at_least`` bytes are buffered (the caller holds the deadline).

    Raises:
        ConnectionResetError: the client closed the connection first.
    """
    at_least = min(at_least, MAX_PEEK)
    seen = -1
    while True:
        try:
            data = sock.recv(MAX_PEEK, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data == b"":
            raise ConnectionResetError("client closed the connection")
        if data is not None:
            if len(data) >= at_least:
                return data
            if len(data) == seen:
                await asyncio.sleep(0.01)  # readable without progress: never spin
            seen = len(data)
            set_lowat(sock, max(at_least, len(data) + 1))
        await _wait_readable(sock)


async def consume(sock: socket.socket, n: int) -> None:
    """Read and drop exactly ``n`` bytes that a peek already showed."""
    while n > 0:
        try:
            chunk = sock.recv(n)
        except BlockingIOError:
            set_lowat(sock, 1)
            await _wait_readable(sock)
            continue
        if not chunk:
            raise ConnectionResetError("client closed the connection")
        n -= len(chunk)
