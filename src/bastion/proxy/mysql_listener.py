"""The proxy's dedicated MySQL port (``proxy_service.mysql_listen_addr``): MySQL clients with
their database certificate, no ``bsh proxy db`` in between.

Layer: ``proxy`` (IO shell). MySQL's server speaks first, so it cannot share the proxy's one
port (nothing to sniff). Here, per connection:

1. greet as a MySQL server (HandshakeV10 offering TLS: ``CLIENT_SSL``);
2. read exactly the client's SSLRequest from the socket (anything else: ERR 1045 and close;
   the TLS ClientHello that follows is left to the TLS layer), then TLS with the
   proxy's certificate, a client certificate from the user TLS CA required (the one ``bsh db
   login`` writes: ``mariadb --ssl-cert=... --ssl-key=... --ssl-ca=...``), verified again
   against the raw user CA as on the shared port;
3. hand the TLS connection to :meth:`bastion.proxy.db_route.DbRoute.handle_mysql` with
   ``seq_shift=1`` (the client's HandshakeResponse41 arrives with sequence id 2): the same RBAC,
   locks, audit and agent path as through ``bsh proxy db``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.audit.emitter import Emitter
from bastion.ca.x509 import verify_certificate_chain
from bastion.clock import Clock
from bastion.errors import AccessDenied, RemoteProtocolError
from bastion.protocols import mysql
from bastion.protocols.addr import parse_addr
from bastion.protocols.alpn import ALPN_MYSQL
from bastion.proxy.db_route import DbRoute
from bastion.proxy.listener import ProxyTLS, _server_context
from bastion.tasks import TaskSet
from bastion.types.identity import Identity

__all__ = ["MySQLListener"]

log = logging.getLogger(__name__)


def greets_as(server_version: str) -> tuple[str, int]:
    """The version and capabilities the port's greeting gives for the configured
    ``proxy_service.mysql_server_version``: TLS offered, and MariaDB's bulk execution when it
    names MariaDB (:func:`bastion.protocols.mysql.greeting`)."""
    version, capabilities = mysql.greeting(server_version)
    return version, capabilities | mysql.CLIENT_SSL


class MySQLListener:
    """Serves MySQL clients on their own port (TLS with a user certificate required)."""

    def __init__(
        self,
        addr: str,
        tls: ProxyTLS,
        route: DbRoute,
        clock: Clock,
        audit: Emitter,
        handshake_timeout: float = 10.0,
        server_version: str = "",
    ) -> None:
        self.host, self.port = parse_addr(addr, 3036)
        self._version, self._capabilities = greets_as(server_version)
        self._route = route
        self._clock = clock
        self._audit = audit
        self._timeout = handshake_timeout
        self._sock: socket.socket | None = None
        self._tasks = TaskSet()
        self._next_id = 0
        self.use_tls(tls)

    def use_tls(self, tls: ProxyTLS) -> None:
        """Serve with these certificates from the next connection on."""
        self._context = _server_context(tls, tls.user_ca_pem, ssl.CERT_REQUIRED, ALPN_MYSQL)
        self._context.num_tickets = 0
        self._anchors = x509.load_pem_x509_certificates(tls.user_ca_pem.encode())

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._tasks.spawn(self._accept(sock), "mysql-accept")
        log.info("proxy: MySQL listener on %s:%d", self.host, self.port)

    async def close(self) -> None:
        await self._tasks.cancel_all(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def greeting(self) -> bytes:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        scramble = bytes(33 + b % 94 for b in os.urandom(20))
        hello = mysql.build_handshake(
            connection_id=self._next_id,
            scramble=scramble,
            server_version=self._version,
            capabilities=self._capabilities,
        )
        return mysql.build_packet(0, hello)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("proxy: MySQL accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            self._tasks.spawn(self._serve(sock, (str(peer[0]), int(peer[1]))), "mysql-conn")

    async def _serve(self, sock: socket.socket, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        owned = True
        try:
            async with asyncio.timeout(self._timeout):
                await loop.sock_sendall(sock, self.greeting())
                # Exactly the SSLRequest: the TLS ClientHello that follows is not ours to read.
                head = await _recv_exact(sock, 4)
                length = int.from_bytes(head[:3], "little")
                if length != 32:
                    raise RemoteProtocolError("TLS with a client certificate is required")
                first = mysql.parse_handshake_response(await _recv_exact(sock, 32))
                if not isinstance(first, mysql.SSLRequest):
                    raise RemoteProtocolError("TLS with a client certificate is required")
                hold = _Hold()  # not the returned protocol: uvloop returns its TLS layer
                transport, _ = await loop.connect_accepted_socket(
                    lambda: hold, sock, ssl=self._context, ssl_handshake_timeout=self._timeout
                )
                owned = False
            identity = self._identity(transport)
        except RemoteProtocolError as exc:
            await _refuse_plain(sock, exc.message)
            await self._refused(client, exc.message)
            return
        except (AccessDenied, OSError, TimeoutError, ValueError) as exc:
            reason = exc.message if isinstance(exc, AccessDenied) else str(exc)
            reason = reason or type(exc).__name__
            if not owned:
                transport.abort()
            await self._refused(client, reason)
            return
        finally:
            if owned:
                sock.close()
        await self._route.handle_mysql(
            transport, identity, client, bytes(hold.buffer), 1, offered=self._capabilities
        )

    def _identity(self, transport: asyncio.Transport) -> Identity:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            raise ValueError("no client certificate")
        identity = verify_certificate_chain(
            x509.load_der_x509_certificate(der),
            self._anchors,
            self._clock.now(),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        if identity.kind not in ("user", "admin", "bot"):
            raise ValueError(f"a {identity.kind} identity may not use databases")
        return identity

    async def _refused(self, client: tuple[str, int], reason: str) -> None:
        log.info("proxy: MySQL client %s:%d refused: %s", client[0], client[1], reason)
        await self._audit.emit(
            "proxy.rejected", outcome="failure", remote_addr=f"{client[0]}:{client[1]}",
            reason=f"MySQL listener: {reason}", route="db_mysql",
        )  # fmt: skip


async def _recv_exact(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < n:
        chunk = await loop.sock_recv(sock, n - len(out))
        if not chunk:
            raise ConnectionResetError("client closed the connection")
        out += chunk
    return out


async def _refuse_plain(sock: socket.socket, message: str) -> None:
    try:
        packet = mysql.err_packet(2, mysql.ER_ACCESS_DENIED, "28000", message)
        await asyncio.get_running_loop().sock_sendall(sock, packet)
    except OSError:
        pass


class _Hold(asyncio.Protocol):
    """Holds what arrives between the TLS handshake and the route taking over."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def eof_received(self) -> bool:
        return False
