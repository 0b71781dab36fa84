"""Dial an SSH route through the proxy: TLS (ALPN ``bastion-ssh/1``, mTLS with the profile's user
certificate), one JSON request line, one JSON reply line, then raw SSH bytes end to end.

Layer: client edge (IO). The request/reply codec (:func:`route_request`, :func:`parse_route_reply`)
is pure; :class:`RouteReplyProtocol` is the small asyncio protocol that buffers until the reply
line and then hands the *same* TLS transport, plus any bytes that arrived after the reply (the
node's SSH banner is often in the same TLS record), to the next protocol. No socketpair, no copy.

:class:`ProxyTunnel` plugs this into asyncssh: ``asyncssh.connect(host, port, tunnel=obj)`` calls
``await obj.create_connection(session_factory, host, port)`` and expects ``(transport, protocol)``
with ``protocol = session_factory()`` already connected (asyncssh ``connection._connect``).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from typing import Any, Final, TypeVar

from bastion.client.profile import Profile
from bastion.client.tls import profile_context
from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BadParameter,
    BastionError,
    ConnectionProblem,
    NotFound,
    RemoteProtocolError,
    error_from_code,
)
from bastion.protocols.alpn import ALPN_SSH
from bastion.protocols.sshroute import encode_request
from bastion.runtime import as_transport

__all__ = [
    "ALPN_SSH",
    "ProxyTunnel",
    "RouteReplyProtocol",
    "check_profile",
    "open_ssh_route",
    "parse_route_reply",
    "pipe_stdio",
    "proxy_ssl_context",
    "route_request",
    "split_host_port",
    "strip_cluster",
]

REPLY_LIMIT: Final = 16 * 1024
"""The proxy's reply is one short JSON line; anything longer is a protocol error."""
DIAL_TIMEOUT: Final = 20.0
"""Seconds for TCP connect + TLS handshake + the proxy's reply (which includes its dial)."""

P = TypeVar("P", bound=asyncio.BaseProtocol)


def split_host_port(addr: str, default_port: int = 3080) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) into its parts.

    Raises:
        BadParameter: the port is not a number.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        return addr.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise BadParameter(f"invalid address {addr!r}: expected HOST:PORT") from None


def route_request(node: str, login: str, port: int) -> bytes:
    """The one request line sent after the TLS handshake (:mod:`bastion.protocols.sshroute`)."""
    return encode_request(node, login, port)


def _error_for(message: str, code: str) -> BastionError:
    if code:
        return error_from_code(code, message)
    low = message.lower()
    if "not found" in low or "no such" in low or "unknown node" in low:
        return NotFound(f"{message} (bsh ls lists the nodes you can reach)")
    if "denied" in low or "not allowed" in low or "forbidden" in low:
        return AccessDenied(message)
    if "expired" in low or "certificate" in low:
        return AuthenticationFailed(message)
    offline = ("offline", "unreachable", "timeout", "timed out", "tunnel", "connect")
    if any(word in low for word in offline):
        return ConnectionProblem(message)
    return BastionError(message)


def parse_route_reply(line: bytes) -> None:
    """Check the proxy's reply line (without or with its ``\\n``).

    Raises:
        NotFound, AccessDenied, ConnectionProblem, ...: ``{"ok": false, "error": "..."}``; the
            class comes from an optional ``code`` field, else from the message's wording.
        RemoteProtocolError: the line is not the JSON object the protocol defines.
    """
    try:
        reply = json.loads(line)
    except ValueError:
        raise RemoteProtocolError(
            f"the proxy answered {line[:60]!r}, not the SSH route reply: is the address a "
            "Bastion proxy of the same version?"
        ) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise RemoteProtocolError(f"malformed reply from the proxy: {line[:80]!r}")
    if not reply["ok"]:
        raise _error_for(str(reply.get("error") or "the proxy refused"), str(reply.get("code", "")))


class RouteReplyProtocol(asyncio.Protocol):
    """Reads the reply line, then hands the transport and any later bytes to the next protocol.

    After the reply arrived, reading is paused so that nothing piles up before :meth:`hand_over`;
    bytes already received after the newline are kept and delivered first.
    """

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = as_transport(transport)  # uvloop's are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self.reply.done():
            return
        end = self._buf.find(b"\n")
        if end >= 0:
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self.reply.set_result(line)
            if self._transport is not None:
                self._transport.pause_reading()
        elif len(self._buf) > REPLY_LIMIT:
            self.reply.set_exception(RemoteProtocolError("the proxy's reply line is too long"))
            if self._transport is not None:
                self._transport.abort()

    def eof_received(self) -> bool | None:
        self._eof = True
        if not self.reply.done():
            self.reply.set_exception(
                ConnectionProblem("the proxy closed the connection before answering")
            )
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)
        if not self.reply.done():
            self.reply.set_exception(_lost_error(exc))

    def hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        """Switch the transport to ``protocol`` and replay what came after the reply line."""
        transport = self._transport
        assert transport is not None and self.reply.done()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        rest = bytes(self._buf)
        self._buf.clear()
        if rest:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(rest)
        if self._eof and isinstance(protocol, asyncio.Protocol):
            protocol.eof_received()
        if self._lost is not None:
            protocol.connection_lost(self._lost[0])
        elif not transport.is_closing():
            transport.resume_reading()


def _lost_error(exc: BaseException | None) -> BastionError:
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or exc
        return AuthenticationFailed(
            f"the proxy refused the TLS connection ({why}): your certificate may be expired or "
            "from another cluster; run bsh login"
        )
    return ConnectionProblem(
        f"the proxy closed the connection before answering ({exc or 'no reason given'}); "
        "your certificate may have been refused: run bsh login"
    )


def check_profile(profile: Profile) -> None:
    """Refuse early, with the fix, when the profile cannot work.

    Raises:
        AuthenticationFailed: the certificates have expired.
    """
    if profile.expired():
        raise AuthenticationFailed(
            f"your login to {profile.cluster} as {profile.user} expired at {profile.expires}: "
            f"run bsh login --proxy={profile.proxy} --user={profile.user}"
        )


def proxy_ssl_context(profile: Profile) -> ssl.SSLContext:
    """mTLS context: trusts only the profile's host CA, presents the user certificate.

    Raises:
        ClientTLSError: the profile's files are missing or unusable (:mod:`bastion.client.tls`).
    """
    return profile_context(profile.path, profile.name, [ALPN_SSH])


async def open_ssh_route(
    profile: Profile,
    node: str,
    login: str,
    port: int,
    protocol_factory: Callable[[], P],
    dial_timeout: float = DIAL_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    request: bytes | None = None,
) -> tuple[asyncio.Transport, P]:
    """Open a route to ``login@node:port`` through the profile's proxy.

    ``request`` replaces the route line (a session join,
    :func:`bastion.protocols.sshroute.encode_join_request`).

    ``ssl_context`` replaces the profile's login certificate (a per-session MFA certificate,
    :func:`bastion.client.session_mfa.session_ssl_context`).

    Returns:
        The TLS transport, now driving ``protocol_factory()`` (already ``connection_made``), with
        the bytes that followed the reply delivered to it.

    Raises:
        AuthenticationFailed: expired profile or refused client certificate (run bsh login).
        NotFound / AccessDenied / ConnectionProblem: as the proxy reported; ConnectionProblem
            also when the proxy cannot be reached or verified, or does not answer in time.
    """
    check_profile(profile)
    ctx = ssl_context or proxy_ssl_context(profile)
    host, proxy_port = split_host_port(profile.proxy)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(dial_timeout):
            transport, reply_proto = await loop.create_connection(
                RouteReplyProtocol,
                host,
                proxy_port,
                ssl=ctx,
                server_hostname=host,
                ssl_handshake_timeout=dial_timeout,
            )
            transport = as_transport(transport)
            try:
                transport.write(request or route_request(node, login, port))
                line = await reply_proto.reply
                parse_route_reply(line)
            except BaseException:
                transport.abort()
                raise
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionProblem(
            f"cannot verify the proxy at {profile.proxy}: {exc.verify_message}; if the cluster "
            "was re-created, run bsh login again"
        ) from None
    except ssl.SSLError as exc:
        raise _lost_error(exc) from None
    except TimeoutError:
        raise ConnectionProblem(
            f"timed out after {dial_timeout:g}s opening a route to {node} through {profile.proxy}"
        ) from None
    except OSError as exc:
        raise ConnectionProblem(
            f"cannot reach the proxy at {profile.proxy}: {exc.strerror or exc}; is it running "
            "and is the address right?"
        ) from None
    protocol = protocol_factory()
    reply_proto.hand_over(protocol)
    return transport, protocol


class ProxyTunnel:
    """asyncssh ``tunnel=`` connector: each SSH connection is one route through the proxy.

    ``host`` given to asyncssh is the node (``name``, ``name.CLUSTER`` or host id); the
    ``.CLUSTER`` suffix is stripped for the proxy, which resolves names itself.
    """

    def __init__(
        self,
        profile: Profile,
        login: str,
        dial_timeout: float = DIAL_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.profile = profile
        self.login = login
        self.timeout = dial_timeout
        self.ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"proxy {self.profile.proxy}"

    async def create_connection(
        self, session_factory: Callable[[], Any], host: str, port: int
    ) -> tuple[asyncio.Transport, Any]:
        node = strip_cluster(host, self.profile.cluster)
        return await open_ssh_route(
            self.profile, node, self.login, port, session_factory, self.timeout, self.ssl_context
        )


def strip_cluster(host: str, cluster: str) -> str:
    """``node.CLUSTER`` -> ``node``; anything else unchanged."""
    suffix = "." + cluster
    if cluster and host.lower().endswith(suffix.lower()) and len(host) > len(suffix):
        return host[: -len(suffix)]
    return host


# ---- ProxyCommand: stdio <-> route ------------------------------------------------------------


class _FlowTarget(asyncio.BaseProtocol):
    """Write side of a pipe: its buffer filling up pauses the reading of ``source``."""

    def __init__(self) -> None:
        self.source: asyncio.ReadTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        if self.source is not None and not self.source.is_closing():
            self.source.pause_reading()

    def resume_writing(self) -> None:
        if self.source is not None and not self.source.is_closing():
            self.source.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Copy(_FlowTarget, asyncio.Protocol):
    """Reads one side and writes to ``sink``; ``ended`` resolves at EOF or loss."""

    def __init__(self, sink: asyncio.WriteTransport | None) -> None:
        super().__init__()
        self.sink = sink
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.sink is not None and not self.sink.is_closing():
            self.sink.write(data)

    def eof_received(self) -> bool | None:
        if not self.ended.done():
            self.ended.set_result(None)
        return None  # close: after the node's EOF the SSH connection is over

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ended.done():
            self.ended.set_result(None)


async def pipe_stdio(
    profile: Profile, node: str, login: str, port: int, stdin_fd: int = 0, stdout_fd: int = 1
) -> None:
    """``bsh proxy ssh``: carry an SSH connection between stdio and a proxy route.

    Stdin EOF is *not* forwarded: TLS 1.3 has no half-close (close_notify ends both directions),
    and OpenSSH's ProxyCommand expects the stream to stay open until the server ends it. So the
    copy runs until the node (the TLS side) closes; then stdout is flushed and closed.

    Both directions are flow-controlled: a full stdout pipe pauses reading from TLS, a full TLS
    buffer pauses reading stdin. Large reads (asyncio's 256 KiB pipe reads, TLS records).

    Raises:
        BadParameter: stdin/stdout are not pipes, sockets or terminals.
        the errors of :func:`open_ssh_route`.
    """
    loop = asyncio.get_running_loop()
    blocking = {fd: os.get_blocking(fd) for fd in (stdin_fd, stdout_fd)}
    try:
        out_pipe = os.fdopen(stdout_fd, "wb", buffering=0, closefd=False)
        in_pipe = os.fdopen(stdin_fd, "rb", buffering=0, closefd=False)
        try:
            stdout, stdout_flow = await loop.connect_write_pipe(_FlowTarget, out_pipe)
        except ValueError:
            raise BadParameter(
                "bsh proxy ssh talks SSH on stdin/stdout: run it as an OpenSSH ProxyCommand "
                "(see bsh config), not with a file as stdout"
            ) from None
        from_node = _Copy(stdout)
        tls, _ = await open_ssh_route(profile, node, login, port, lambda: from_node)
        stdout_flow.source = tls
        try:
            stdin, to_node = await loop.connect_read_pipe(lambda: _Copy(tls), in_pipe)
        except ValueError:
            tls.abort()
            raise BadParameter(
                "bsh proxy ssh reads SSH from stdin: run it as an OpenSSH ProxyCommand"
            ) from None
        from_node.source = stdin
        try:
            await from_node.ended
        finally:
            stdin.close()
            tls.close()
            stdout.close()
            async with asyncio.timeout(10):
                await stdout_flow.closed
    finally:
        for fd, mode in blocking.items():
            os.set_blocking(fd, mode)
