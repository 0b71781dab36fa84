"""Agent side of the reverse tunnel: dial the proxy, serve the streams it opens, reconnect.

Layer: ``tunnel`` (IO shell). An agent never listens: it dials the proxy's public port with TLS
(its host certificate as client certificate, the proxy verified by the host TLS CA, ALPN
``bastion-tunnel/1``) and runs a :class:`~bastion.tunnel.session.MuxSession`. Each stream the
proxy opens (one per user SSH connection) is handed to ``on_stream(stream, header)``.

Reconnecting: exponential backoff with *full jitter* (delay = uniform(0, min(cap, base * 2**n)),
the AWS architecture blog's recommendation), so that a proxy restart is not met by every agent at
the same instant. The attempt counter resets once a tunnel stayed up for ``healthy_after`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType

from bastion.client.tls import pem_context
from bastion.errors import ConnectionProblem, LimitExceeded
from bastion.protocols.alpn import ALPN_TUNNEL
from bastion.tasks import spawn
from bastion.tunnel.session import MuxSession, StreamHandler

__all__ = ["TunnelClient", "client_tls_context"]

log = logging.getLogger(__name__)


def client_tls_context(cert_pem: str, key_pem: str, host_ca_pem: str) -> ssl.SSLContext:
    """TLS client context of an agent: host cert + key, trust only the host TLS CA, tunnel ALPN.

    Args:
        cert_pem: the agent's X.509 host certificate (PEM).
        key_pem: its private key (PEM).
        host_ca_pem: the host TLS CA certificates (PEM, all trusted keys).

    Raises:
        ClientTLSError: the CA bundle or the key pair does not load (:mod:`bastion.client.tls`).
    """
    return pem_context(host_ca_pem, cert_pem, key_pem, [ALPN_TUNNEL])


Connector = Callable[[Callable[[], MuxSession]], Awaitable[MuxSession]]
"""Opens a tunnel another way than TLS to the proxy: given a factory of the client MuxSession,
returns that session connected (the in-process node uses :mod:`bastion.tunnel.memory`)."""


class TunnelClient:
    """Keeps one reverse tunnel to the proxy up.

    Args:
        host: proxy host name or address.
        port: proxy port.
        ssl_context: from :func:`client_tls_context`.
        on_stream: handler for each stream the proxy opens (attach a protocol to it).
        server_hostname: the name to verify in the proxy's certificate (default: ``host``).
        connect_timeout: seconds for TCP connect + TLS handshake.
        backoff_base: first retry delay ceiling, seconds.
        backoff_cap: largest retry delay ceiling, seconds.
        healthy_after: a tunnel up this long resets the backoff.
        keepalive_interval: seconds between PINGs.
        keepalive_timeout: silence after which the tunnel is declared dead.

    Use as ``async with TunnelClient(...) as client:`` (runs in a kept task) or await
    :meth:`run` inside your own TaskGroup.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        on_stream: StreamHandler,
        *,
        server_hostname: str | None = None,
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        healthy_after: float = 30.0,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 15.0,
        connector: Connector | None = None,
    ) -> None:
        self._connector = connector
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self._on_stream = on_stream
        self._server_hostname = server_hostname or host
        self._connect_timeout = connect_timeout
        self._base = backoff_base
        self._cap = backoff_cap
        self._healthy_after = healthy_after
        self._interval = keepalive_interval
        self._timeout = keepalive_timeout
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.session: MuxSession | None = None
        """The current tunnel, when connected."""
        self.connects = 0
        """Successful connections so far (tests watch reconnects with it)."""

    def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use ``ssl_context`` from the next connection on (a renewed host certificate); the
        tunnel up now stays as it is."""
        self._ctx = ssl_context

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        ceiling = min(self._cap, self._base * 2 ** min(attempt - 1, 30))
        return random.uniform(0, ceiling)

    async def wait_connected(self) -> MuxSession:
        """Wait until a tunnel is up and return it (wrap in ``asyncio.timeout``)."""
        while True:
            await self._connected.wait()
            session = self.session
            if session is not None and not session.is_closed:
                return session
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        """Connect, serve, reconnect -- until :meth:`close`."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                session = await self._connect()
            except (OSError, ssl.SSLError, TimeoutError, ConnectionProblem, LimitExceeded) as exc:
                log.warning("tunnel: cannot reach proxy %s:%d: %s", self.host, self.port, exc)
            else:
                await self._serve(session)
                if loop.time() - started >= self._healthy_after:
                    attempt = 0
            if self._stopping.is_set():
                break
            attempt += 1
            delay = self.backoff(attempt)
            log.info("tunnel: reconnecting in %.2f s (attempt %d)", delay, attempt)
            try:
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    def _new_session(self) -> MuxSession:
        return MuxSession(
            "client",
            on_stream=self._on_stream,
            keepalive_interval=self._interval,
            keepalive_timeout=self._timeout,
            name=f"proxy {self.host}:{self.port}",
        )

    async def _connect(self) -> MuxSession:
        if self._connector is not None:
            return await self._connector(self._new_session)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            transport, session = await loop.create_connection(
                lambda: MuxSession(
                    "client",
                    on_stream=self._on_stream,
                    keepalive_interval=self._interval,
                    keepalive_timeout=self._timeout,
                    name=f"proxy {self.host}:{self.port}",
                ),
                self.host,
                self.port,
                ssl=self._ctx,
                server_hostname=self._server_hostname,
                ssl_handshake_timeout=self._connect_timeout,
            )
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != ALPN_TUNNEL:
            transport.abort()
            raise ConnectionProblem(f"proxy did not accept the tunnel protocol (ALPN {alpn!r})")
        return session

    async def _serve(self, session: MuxSession) -> None:
        self.session = session
        self.connects += 1
        self._connected.set()
        log.info("tunnel: connected to proxy %s:%d", self.host, self.port)
        try:
            await session.wait_closed()
        finally:
            self._connected.clear()
            if self.session is session:
                self.session = None
            if not session.is_closed:  # cancelled: do not leave the connection behind
                session.abort("agent shutting down")
        log.info(
            "tunnel: disconnected from proxy %s:%d: %s",
            self.host,
            self.port,
            session.close_reason or "closed",
        )

    async def close(self) -> None:
        """Stop reconnecting and close the tunnel (GOAWAY first)."""
        self._stopping.set()
        session = self.session
        if session is not None:
            session.close("agent shutting down")
            try:
                async with asyncio.timeout(5):
                    await session.wait_closed()
            except TimeoutError:
                session.abort("agent shutting down")
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(5):
                    await task
            except TimeoutError:
                task.cancel()

    async def __aenter__(self) -> TunnelClient:
        self._task = spawn(self.run(), "tunnel-client")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
