"""ProxyListener: the one public TCP port (default 3080) of the proxy.

Layer: ``proxy`` (IO shell). Per accepted socket, under one handshake deadline (peek + TLS):

1. **Peek** (``recv(MSG_PEEK)``; nothing is consumed) until :func:`~bastion.protocols.detect.detect`
   decides. Why peek: stdlib ``ssl`` must see the ClientHello itself, and we must read it first
   to pick the ``SSLContext`` (STYLE.md design constraint 3). ``SO_RCVLOWAT`` makes the socket
   readable only once more bytes than already peeked are there, so a slowloris client costs one
   wake-up per byte and never a busy loop.
2. **PROXY v1/v2** only from ``trusted_proxy_sources``: the header is *consumed* (exactly its
   length), the real client address taken from it, and detection starts again (a second header is
   refused). From anyone else a PROXY header is refused and logged.
3. **Plain HTTP**: a ``308`` to ``https://<Host><path>`` (request head read up to 8 KiB), close.
   **PostgreSQL SSLRequest** (with a database route): consumed, answered ``S``, and detection
   continues with the TLS ClientHello that follows, routed to :mod:`bastion.proxy.db_route`.
   SSH banners, other Postgres packets and unknown bytes: close.
4. **TLS**: parse the ClientHello, :func:`~bastion.proxy.router.route` by ALPN, hand the socket to
   ``loop.connect_accepted_socket`` with the route's context: ``bastion-ssh/1`` requires a client
   certificate from the user TLS CA, ``bastion-tunnel/1`` from the host TLS CA; the web accepts an
   optional user certificate (bsh/bctl mTLS to the auth API). After the handshake the certificate
   is verified again with :func:`bastion.ca.x509.verify_certificate_chain` against the raw CA of
   the purpose (ARCHITECTURE.md 6.4; a certificate verified on the same route before and still
   valid is remembered by its DER bytes until the trust anchors change), then handed to the
   SSH route, the tunnel server or the web (an aiohttp ``web.Server`` protocol factory,
   in-process: design constraint 8).
5. **Web pass-through** (a proxy in its own process, :class:`WebUpstream`): the web route is
   decided from the ClientHello and then *not* terminated: the bytes go to an auth server after
   a PROXY v2 header naming the client, so auth does the handshake and sees the client
   certificate and address. Peeking and the PROXY header code live in
   :mod:`bastion.api.proxy_header`, shared with the auth port.

Bounds (ARCHITECTURE.md 6.5): at most ``max_unauthenticated_per_ip`` / ``_total`` connections that
have not finished authenticating; each such connection is its own task with a deadline, so junk
never delays a real login. Refusals after TLS are audited as ``proxy.rejected``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.api.proxy_header import TrustedSources, peek, read_proxy_header, set_lowat
from bastion.api.ratelimit import RateLimiter
from bastion.audit.emitter import Emitter
from bastion.auth.gate import IdentityGate
from bastion.ca.x509 import VerifiedLeafCache, verify_leaf
from bastion.clock import Clock
from bastion.errors import AccessDenied, BastionError, RemoteProtocolError
from bastion.protocols.clienthello import ClientHello, parse_client_hello
from bastion.protocols.detect import Kind, NeedMore, build_proxy_header_v2, detect
from bastion.proxy.app_route import AppRoute
from bastion.proxy.cluster_route import ClusterHub
from bastion.proxy.db_route import DbRoute
from bastion.proxy.limits import UnauthenticatedLimiter
from bastion.proxy.relay import Relay
from bastion.proxy.router import Route, RouteKind, route
from bastion.proxy.ssh_route import SSHRoute
from bastion.runtime import as_transport
from bastion.tasks import TaskSet
from bastion.tunnel.server import TunnelServer
from bastion.types.identity import Identity

__all__ = ["ListenerConfig", "ListenerDeps", "ProxyListener", "ProxyTLS", "WebUpstream"]

log = logging.getLogger(__name__)

_MAX_HTTP_HEAD = 8 * 1024
_HOST_RE = re.compile(
    r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$"
)
_PATH_RE = re.compile(r"^/[\x21-\x7e]{0,2047}$")


@dataclass(frozen=True, slots=True)
class ProxyTLS:
    """The proxy's certificate and the trust anchors per purpose (PEM)."""

    cert_pem: str
    """The proxy's server certificate (host TLS CA), chain included if any."""
    key_pem: str
    user_ca_pem: str
    """User TLS CA certificates (all trusted keys): clients on ssh and web."""
    host_ca_pem: str
    """Host TLS CA certificates: agents on the tunnel route."""


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 3080
    """0 picks a free port (read it back from :attr:`ProxyListener.port`)."""
    handshake_timeout: float = 10.0
    """Seconds from accept to a verified peer (detection, PROXY header, TLS handshake)."""
    trusted_proxy_sources: tuple[str, ...] = ()
    """CIDRs of load balancers allowed to send a PROXY protocol header."""
    max_unauthenticated_per_ip: int = 64
    max_unauthenticated_total: int = 4096
    backlog: int = 1024


@dataclass(frozen=True, slots=True)
class WebUpstream:
    """Auth servers that the web/API route is passed through to (a proxy in its own process).

    The proxy does not terminate TLS on that route: auth sees the client's own handshake (its
    client certificate included), preceded by a PROXY protocol v2 header with the client's
    address (auth accepts it only from its ``trusted_proxy_sources``)."""

    addrs: tuple[tuple[str, int], ...]
    connect_timeout: float = 5.0
    """Seconds per auth address; an unreachable one is skipped for the next."""


@dataclass(frozen=True, slots=True)
class ListenerDeps:
    tls: ProxyTLS
    clock: Clock
    audit: Emitter
    tunnel: TunnelServer | None = None
    ssh: SSHRoute | None = None
    web: Callable[[], asyncio.BaseProtocol] | None = None
    """Protocol factory of the web/API server (e.g. an aiohttp ``AppRunner.server``)."""
    gate: IdentityGate | None = None
    """The authentication gate agents' tunnels pass (the SSH route and the web app call it
    themselves, where they can tell the client why); None in tests of the listener alone."""
    web_upstream: WebUpstream | None = None
    """Pass the web route through to auth instead of serving it here (``web`` is then unused)."""
    db: DbRoute | None = None
    app: AppRoute | None = None
    """The app route: TLS with an SNI of ``NAME.<app.domain>`` (None: no app route)."""
    """The database route: PostgreSQL's SSLRequest is answered in-band (None: refused)."""
    clusters: ClusterHub | None = None
    """Trusted clusters: leaves' tunnels (their host CAs) and routes through them (None: no
    leaves; docs/trusted-clusters.md)."""


class _Refused(Exception):
    """Close the connection; the message says why (logged)."""


class _Handshake(asyncio.Protocol):
    """Holds a TLS connection between the handshake and the hand-off (reading paused)."""

    def __init__(self) -> None:
        self.early = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.early += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def _server_context(tls: ProxyTLS, ca_pem: str, mode: ssl.VerifyMode, alpn: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="bastion-tls-") as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(tls.cert_pem)
        key_file.touch(mode=0o600)
        key_file.write_text(tls.key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    ctx.verify_mode = mode
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.set_alpn_protocols([alpn])
    return ctx


class ProxyListener:
    """Serves the shared proxy port. Use ``async with`` or :meth:`start` / :meth:`close`."""

    def __init__(self, config: ListenerConfig, deps: ListenerDeps) -> None:
        self.config = config
        self._deps = deps
        self._limiter = UnauthenticatedLimiter(
            config.max_unauthenticated_per_ip, config.max_unauthenticated_total
        )
        self._trusted = TrustedSources(config.trusted_proxy_sources)
        self._extra_tunnel_cas: list[str] = []
        self.use_tls(deps.tls)
        # Refusals before authentication are audited, but bounded (see _audit_refusal).
        self._audit_per_ip = RateLimiter(rate=0.2, burst=5)
        self._audit_global = RateLimiter(rate=20.0, burst=100)
        self._suppressed: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet()
        self._next_upstream = 0
        self.port = config.port

    def trust_tunnel_ca(self, pem: str) -> None:
        """Also accept tunnel client certificates from this CA at the handshake (a leaf
        cluster's host CA); which identities it may sign is decided after it
        (:meth:`ClusterHub.verify_tunnel`)."""
        self._contexts[RouteKind.TUNNEL].load_verify_locations(cadata=pem)
        self._extra_tunnel_cas.append(pem)

    def use_tls(self, tls: ProxyTLS) -> None:
        """Serve with these certificates and trust anchors from the next handshake on (a
        renewed proxy certificate, a rotated CA); connections already up keep theirs."""
        contexts = {
            RouteKind.SSH: _server_context(
                tls, tls.user_ca_pem, ssl.CERT_REQUIRED, Route.SSH.alpn or ""
            ),
            RouteKind.TUNNEL: _server_context(
                tls, tls.host_ca_pem, ssl.CERT_REQUIRED, Route.TUNNEL.alpn or ""
            ),
            RouteKind.DB: _server_context(
                tls, tls.user_ca_pem, ssl.CERT_REQUIRED, Route.DB.alpn or ""
            ),
            RouteKind.DB_MYSQL: _server_context(
                tls, tls.user_ca_pem, ssl.CERT_REQUIRED, Route.DB_MYSQL.alpn or ""
            ),
            # The API behind the web route takes users (bsh, bctl) and agents (heartbeats,
            # watches) alike; it checks each certificate against the CA of its purpose.
            RouteKind.WEB: _server_context(
                tls, tls.user_ca_pem + tls.host_ca_pem, ssl.CERT_OPTIONAL, Route.WEB.alpn or ""
            ),
            # Apps: browsers (cookie) or a user certificate routed to the app (curl --cert).
            RouteKind.APP: _server_context(
                tls, tls.user_ca_pem, ssl.CERT_OPTIONAL, Route.APP.alpn or ""
            ),
            # TCP apps (bsh proxy app NAME): a user certificate routed to the app.
            RouteKind.APP_TCP: _server_context(
                tls, tls.user_ca_pem, ssl.CERT_REQUIRED, Route.APP_TCP.alpn or ""
            ),
        }
        # No TLS 1.3 session tickets to database clients: libpq waits on the tickets that
        # follow the handshake, a ~35 ms stall per connection (bench/db.py: 3.5x -> 1.3x of a
        # direct connection); nothing resumes these sessions anyway.
        contexts[RouteKind.DB].num_tickets = 0
        contexts[RouteKind.DB_MYSQL].num_tickets = 0
        # App hosts speak HTTP/2 to clients that offer it (the app route translates to HTTP/1.1).
        contexts[RouteKind.APP].set_alpn_protocols(["h2", Route.APP.alpn or ""])
        for pem in self._extra_tunnel_cas:
            contexts[RouteKind.TUNNEL].load_verify_locations(cadata=pem)
        self._contexts = contexts
        self._anchors = {
            "user": x509.load_pem_x509_certificates(tls.user_ca_pem.encode()),
            "host": x509.load_pem_x509_certificates(tls.host_ca_pem.encode()),
        }
        # Client certificates verified against these anchors (by route and DER bytes): a
        # reconnecting client (pgbench -C, bsh) is not parsed and signature-checked again.
        # New anchors (a rotated CA): everything is verified afresh.
        self._verified = VerifiedLeafCache()

    @property
    def limiter(self) -> UnauthenticatedLimiter:
        return self._limiter

    async def start(self) -> None:
        """Bind and start accepting."""
        sock = socket.create_server(
            (self.config.host, self.config.port), backlog=self.config.backlog
        )
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accept_task = self._tasks.spawn(self._accept_loop(sock), "proxy-accept")
        log.debug("proxy listening on %s:%d", self.config.host, self.port)

    async def close(self) -> None:
        """Stop accepting and end every connection task this listener runs."""
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._sock is not None:
            self._sock.close()
        await self._tasks.cancel_all(timeout=5)
        self._accept_task = None

    async def __aenter__(self) -> ProxyListener:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.error("proxy accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            peer = (str(addr[0]), int(addr[1]))
            self._tasks.spawn(self._handle(sock, peer), f"proxy-conn-{peer[0]}:{peer[1]}")

    # ------------------------------------------------------------------ per connection

    async def _handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        counted = [peer[0]]  # the IP counted against the limits (changes with a PROXY header)
        if not self._limiter.acquire(peer[0]):
            log.warning("proxy: too many unauthenticated connections from %s", peer[0])
            sock.close()
            await self._audit_refusal(peer, "too many unauthenticated connections", "limit")
            return
        deadline = loop.time() + self.config.handshake_timeout
        owned = True  # the socket is ours to close until a transport owns it
        passthrough = False
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    client, hello, in_band = await self._classify(sock, peer, counted)
            except (_Refused, RemoteProtocolError, OSError, TimeoutError) as exc:
                # A bare connect-and-close is a load balancer's health check: not worth a line.
                quiet = isinstance(exc, ConnectionResetError)
                (log.debug if quiet else log.info)(
                    "proxy: closed %s:%d before TLS: %s", peer[0], peer[1], _why(exc)
                )
                if isinstance(exc, TimeoutError):
                    await self._audit_refusal(peer, "handshake deadline exceeded", "detect")
                elif isinstance(exc, RemoteProtocolError) or (
                    isinstance(exc, _Refused) and "redirected" not in str(exc)
                ):
                    await self._audit_refusal(peer, _why(exc), "detect")
                return
            # psql's in-band TLS (SSLRequest answered "S") offers no ALPN: the database route.
            domain = self._deps.app.domain if self._deps.app is not None else ""
            chosen = Route.DB if in_band else route(hello.alpn, hello.sni, domain)
            if chosen.kind is RouteKind.REFUSE:
                log.warning("proxy: refused %s:%d: %s", client[0], client[1], chosen.reason)
                await self._audit_refusal(client, chosen.reason or "refused", "alpn")
                return
            if chosen.kind is RouteKind.WEB and self._deps.web_upstream is not None:
                owned = False  # the pass-through owns it now
                passthrough = True
                return
            set_lowat(sock, 1)
            try:
                async with asyncio.timeout_at(deadline + 1):
                    # Our own protocol object: with TLS, uvloop returns its TLS layer instead.
                    holder = _Handshake()
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: holder,
                        sock,
                        ssl=self._contexts[chosen.kind],
                        ssl_handshake_timeout=max(0.05, deadline - loop.time()),
                    )
                owned = False
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                await self._handshake_failed(client, chosen, exc)
                return
            accepted, identity = await self._verify(transport, chosen, client)
            if not accepted:
                return
        finally:
            self._limiter.release(counted[0])
            if owned:
                sock.close()
            if passthrough:  # after the limiter's release: auth bounds its own handshakes
                await self._pass_through(sock, client)
        await self._dispatch(chosen, transport, holder, identity, client)

    async def _pass_through(self, sock: socket.socket, client: tuple[str, int]) -> None:
        """Relay the connection, TLS untouched, to the first auth server that answers, after
        a PROXY v2 header naming the client (and the address it reached us on)."""
        upstream = self._deps.web_upstream
        assert upstream is not None
        loop = asyncio.get_running_loop()
        relay = Relay(name=f"web {client[0]}:{client[1]}")
        start = self._next_upstream
        self._next_upstream += 1
        first = start % len(upstream.addrs)  # round robin, the others as fallbacks
        addrs = upstream.addrs[first:] + upstream.addrs[:first]
        local = sock.getsockname()
        header = build_proxy_header_v2(client, (str(local[0]), int(local[1])))
        try:
            for host, port in addrs:
                try:
                    async with asyncio.timeout(upstream.connect_timeout):
                        auth, _ = await loop.create_connection(lambda: relay.b, host, port)
                except (OSError, TimeoutError) as exc:
                    log.warning("proxy: auth %s:%d unreachable: %s", host, port, _why(exc))
                    continue
                auth.write(header)
                set_lowat(sock, 1)
                await loop.connect_accepted_socket(lambda: relay.a, sock)
                relay.start()
                await relay.wait_closed()
                return
            log.error("proxy: no auth server reachable for the web route of %s", client[0])
            sock.close()
        except asyncio.CancelledError:
            relay.terminate("proxy shutting down")
            sock.close()
            raise

    async def _classify(
        self, sock: socket.socket, peer: tuple[str, int], counted: list[str]
    ) -> tuple[tuple[str, int], ClientHello, bool]:
        client = peer
        in_band = False
        got = await read_proxy_header(sock, peer[0], self._trusted)
        if got.had_header and got.source is not None:
            client = (got.source.host, got.source.port)
            # Count the real client, not the load balancer, against the per-IP limit.
            if not self._limiter.acquire(client[0]):
                raise _Refused(f"too many unauthenticated connections from {client[0]}")
            self._limiter.release(counted[0])
            counted[0] = client[0]
        data = got.data
        while True:
            found = detect(data)
            if isinstance(found, NeedMore):
                data = await peek(sock, found.at_least)
                continue
            if found.kind is Kind.POSTGRES_SSL_REQUEST and self._deps.db and not in_band:
                await _consume(sock, 8)  # the 8-byte SSLRequest; TLS follows our "S"
                await asyncio.get_running_loop().sock_sendall(sock, b"S")
                in_band, data = True, b""
                continue
            if found.kind is Kind.POSTGRES_CANCEL_REQUEST and self._deps.db and not in_band:
                if len(data) < 16:
                    data = await peek(sock, 16)
                    continue
                # Routed only to the live session holding this key (audited by the route).
                pid = int.from_bytes(data[8:12], "big", signed=True)
                secret = int.from_bytes(data[12:16], "big")
                await self._deps.db.cancel(pid, secret, client)
                raise _Refused("postgres cancel request redirected to the database route")
            if found.kind is Kind.HTTP:
                await _redirect(sock)
                raise _Refused("plain HTTP redirected to HTTPS")
            if found.kind is not Kind.TLS:
                raise _Refused(f"unsupported protocol: {found.reason}")
            hello = parse_client_hello(data)
            while hello is None:
                data = await peek(sock, len(data) + 1)
                hello = parse_client_hello(data)
            return client, hello, in_band

    async def _audit_refusal(self, client: tuple[str, int], reason: str, stage: str) -> None:
        """Audit a refusal before authentication, rate-limited per source IP and globally so
        that junk traffic cannot flood the audit log; suppressed refusals are counted in the
        next event from that address."""
        ip = client[0]
        now = self._deps.clock.monotonic()
        if not (self._audit_global.allow("*", now) and self._audit_per_ip.allow(ip, now)):
            self._suppressed[ip] = self._suppressed.get(ip, 0) + 1
            return
        suppressed = self._suppressed.pop(ip, 0)
        await self._deps.audit.emit(
            "proxy.rejected",
            outcome="failure",
            remote_addr=f"{ip}:{client[1]}",
            reason=reason,
            route=stage,
            suppressed=suppressed,
        )

    async def _handshake_failed(
        self, client: tuple[str, int], chosen: Route, exc: BaseException
    ) -> None:
        reason = _why(exc)
        log.warning("proxy: TLS handshake with %s:%d failed: %s", client[0], client[1], reason)
        if isinstance(exc, ssl.SSLError) and "CERTIFICATE" in reason.upper():
            await self._deps.audit.emit(
                "proxy.rejected",
                outcome="failure",
                remote_addr=f"{client[0]}:{client[1]}",
                reason=f"TLS handshake on {chosen.kind.value} route failed: {reason}",
                route=chosen.kind.value,
            )

    async def _verify(
        self, transport: asyncio.Transport, chosen: Route, client: tuple[str, int]
    ) -> tuple[bool, Identity | None]:
        """Verify the peer certificate again against the raw CA of the route's purpose.

        Returns:
            ``(accepted, identity)``; the identity is None only for the web without a
            client certificate. A refused connection is already aborted and audited.
        """
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        who = ""
        try:
            in_band_db = chosen.kind is RouteKind.DB and alpn is None
            web_like = chosen.kind in (RouteKind.WEB, RouteKind.APP)  # curl, wrk: maybe no ALPN
            if not web_like and alpn != chosen.alpn and not in_band_db:
                raise AccessDenied(f"ALPN {chosen.alpn} was not negotiated (got {alpn!r})")
            if der is None:
                if web_like:
                    return True, None
                raise AccessDenied("no client certificate")
            now = self._deps.clock.now()
            key = (chosen.kind, der)
            known = self._verified.get(key, now)
            if known is not None:  # this certificate, verified on this route, still valid
                return True, known
            cert = x509.load_der_x509_certificate(der)
            who = _subject(cert)
            purpose = "host" if chosen.kind is RouteKind.TUNNEL else "user"
            leaves = self._deps.clusters
            own_host = _issued_by(cert, self._anchors["host"])
            if chosen.kind is RouteKind.TUNNEL and leaves is not None and not own_host:
                return True, leaves.verify_tunnel(cert)  # a leaf's proxy (its own CA only)
            if chosen.kind is RouteKind.WEB and _issued_by(cert, self._anchors["host"]):
                purpose = "host"  # agents call the API too (heartbeats, watches, events)
            leaf = verify_leaf(
                cert, self._anchors[purpose], now, usage=ExtendedKeyUsageOID.CLIENT_AUTH
            )
            identity = leaf.identity
            allowed = ("host",) if purpose == "host" else ("user", "admin", "bot")
            if identity.kind not in allowed:
                raise AccessDenied(
                    f"a {identity.kind} identity may not use the {chosen.alpn} route"
                )
            self._verified.put(key, leaf)
            return True, identity
        except (AccessDenied, ValueError) as exc:
            reason = str(exc)
            log.warning("proxy: refused %s from %s:%d: %s", who, client[0], client[1], reason)
            await self._deps.audit.emit(
                "proxy.rejected",
                outcome="failure",
                user=who,
                remote_addr=f"{client[0]}:{client[1]}",
                reason=reason,
                route=chosen.kind.value,
            )
            transport.abort()
            return False, None

    async def _dispatch(
        self,
        chosen: Route,
        transport: asyncio.Transport,
        holder: _Handshake,
        identity: Identity | None,
        client: tuple[str, int],
    ) -> None:
        early = bytes(holder.early)
        if holder.lost:
            return
        try:
            await self._hand_off(chosen, transport, identity, client, early)
        except Exception:
            log.exception("proxy: %s route failed for %s:%d", chosen.kind.value, *client)
            transport.abort()

    async def _hand_off(
        self,
        chosen: Route,
        transport: asyncio.Transport,
        identity: Identity | None,
        client: tuple[str, int],
        early: bytes,
    ) -> None:
        if chosen.kind is RouteKind.SSH and identity is not None and self._deps.ssh is not None:
            await self._deps.ssh.handle(transport, identity, client, early)
        elif (
            chosen.kind is RouteKind.TUNNEL
            and identity is not None
            and self._deps.clusters is not None
            and self._deps.clusters.is_leaf(identity)
        ):
            await self._deps.clusters.accept(transport, identity, early)
        elif chosen.kind is RouteKind.TUNNEL and identity is not None and self._deps.tunnel:
            if self._deps.gate is not None:
                try:
                    await self._deps.gate.admit(
                        identity, "host", "tunnel", f"{client[0]}:{client[1]}"
                    )
                except BastionError as exc:
                    log.info("proxy: tunnel of %s refused: %s", identity.user, exc.message)
                    transport.abort()
                    return
            try:
                tunnel = self._deps.tunnel.accept(transport, identity, early)
            except BastionError as exc:  # over the admission rate: the agent backs off
                log.info("proxy: tunnel of %s refused: %s", identity.user, exc.message)
                transport.abort()
                return
            transport.resume_reading()
            await tunnel.session.wait_closed()
        elif chosen.kind is RouteKind.DB and identity is not None and self._deps.db is not None:
            await self._deps.db.handle(transport, identity, client, early)
        elif chosen.kind is RouteKind.DB_MYSQL and identity is not None and self._deps.db:
            await self._deps.db.handle_mysql(transport, identity, client, early)
        elif chosen.kind is RouteKind.APP and self._deps.app is not None:
            await self._deps.app.handle(transport, identity, client, early, chosen.target)
        elif chosen.kind is RouteKind.APP_TCP and identity is not None and self._deps.app:
            await self._deps.app.handle_tcp(transport, identity, client, early)
        elif chosen.kind is RouteKind.WEB and self._deps.web is not None:
            protocol = self._deps.web()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if early and isinstance(protocol, asyncio.Protocol):
                protocol.data_received(early)
            transport.resume_reading()
        else:
            log.warning("proxy: no handler for route %s", chosen.kind.value)
            transport.abort()


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "handshake deadline passed"
    return str(exc) or type(exc).__name__


async def _redirect(sock: socket.socket) -> None:
    """Answer a plain HTTP request with a 308 to HTTPS on the same Host and path."""
    loop = asyncio.get_running_loop()
    set_lowat(sock, 1)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < _MAX_HTTP_HEAD:
        chunk = await loop.sock_recv(sock, _MAX_HTTP_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    host = next(
        (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("host:")),
        "",
    )
    path = parts[1] if len(parts) == 3 else ""
    if _HOST_RE.match(host) and _PATH_RE.match(path):
        response = (
            "HTTP/1.1 308 Permanent Redirect\r\n"
            f"Location: https://{host}{path}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    else:
        response = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    await loop.sock_sendall(sock, response.encode("latin-1"))


async def _consume(sock: socket.socket, n: int) -> None:
    """Read exactly ``n`` bytes that were peeked already (and drop them)."""
    loop = asyncio.get_running_loop()
    set_lowat(sock, 1)
    got = 0
    while got < n:
        chunk = await loop.sock_recv(sock, n - got)
        if not chunk:
            raise ConnectionResetError("client closed the connection")
        got += len(chunk)


def _issued_by(cert: x509.Certificate, anchors: list[x509.Certificate]) -> bool:
    """Whether ``cert`` names one of ``anchors`` as issuer (a hint; the chain is verified)."""
    return any(cert.issuer == anchor.subject for anchor in anchors)
