"""The database agent: serves ``db`` streams from the proxy by connecting to the real database.

Layer: ``agent`` (IO shell over :mod:`bastion.protocols.postgres`). The proxy has authorized
the user, the database, the db user and the db name; it opens a stream through this agent's
reverse tunnel with header ``{"type": "db", "db": NAME, "params": {...}}``. The agent then:

1. finds the database in its configuration (an unknown name is refused);
2. gets a client certificate for the db user (CN = db user), signed by the cluster's ``db``
   CA, from auth (:class:`DbClientCerts`; cached until shortly before it expires);
3. connects to the database, sends an SSLRequest, requires ``S``, and does TLS verifying the
   server certificate against the database's CA bundle (default: the db CA) and its name;
   plaintext only with ``tls.mode: insecure-plaintext`` (logged as a warning every time);
4. sends a StartupMessage built from the proxy's (already filtered) parameters, and relays.

The database authenticates the db user by the certificate (``pg_hba.conf``: ``hostssl ...
cert``), so no password exists anywhere. Failures reach the client as an ErrorResponse
(SQLSTATE 08006) naming the database, never as a silently dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.agent.pump import pump_pair
from bastion.clock import Clock
from bastion.errors import BastionError, ConnectionProblem, NotFound
from bastion.protocols.postgres import SSL_REQUEST, build_startup, error_response
from bastion.types.database import Database

__all__ = ["DbAgent", "DbAgentDeps", "DbClientCert", "DbClientCerts"]

log = logging.getLogger(__name__)

_RENEW_BEFORE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class DbClientCert:
    cert_pem: str
    key_pem: str
    ca_pem: str
    """The db CA bundle (default trust for the database's server certificate)."""
    expires: datetime


DbClientCerts = Callable[[str], Awaitable[DbClientCert]]
"""Gets a client certificate for a db user from auth (in process, or ``DB_AGENT_CERT``)."""


@dataclass(frozen=True, slots=True)
class DbAgentDeps:
    databases: Sequence[Database]
    certs: DbClientCerts
    clock: Clock
    connect_timeout: float = 10.0


@dataclass(slots=True)
class _Cached:
    cert: DbClientCert
    context: ssl.SSLContext


@dataclass(slots=True)
class DbAgent:
    """Serves the ``db`` streams of one agent (several databases)."""

    deps: DbAgentDeps
    _cache: dict[tuple[str, str], _Cached] = field(default_factory=dict)

    def database(self, name: str) -> Database:
        for db in self.deps.databases:
            if db.metadata.name == name:
                return db
        raise NotFound(f'database "{name}" is not served by this agent')

    async def on_stream(self, stream: asyncio.Transport, header: dict[str, Any]) -> None:
        """Serve one ``type: db`` stream until either end closes."""
        loop = asyncio.get_running_loop()
        params = {str(k): str(v) for k, v in dict(header.get("params") or {}).items()}
        name = str(header.get("db", ""))
        try:
            db = self.database(name)
            async with asyncio.timeout(self.deps.connect_timeout):
                server = await self._connect(db, params.get("user", ""))
        except (BastionError, OSError, TimeoutError, ssl.SSLError) as exc:
            why = exc.message if isinstance(exc, BastionError) else str(exc) or "timed out"
            log.warning("db agent: cannot reach %s: %s", name, why)
            stream.write(error_response(f'database "{name}": {why}', code="08006"))
            stream.close()
            return
        done: asyncio.Future[None] = loop.create_future()
        a, b = pump_pair(done)
        server.set_protocol(b)
        b.connection_made(server)
        stream.set_protocol(a)
        a.connection_made(stream)
        server.write(build_startup(params))
        if stream.is_reading():  # held bytes are delivered by resume_reading
            stream.pause_reading()
        stream.resume_reading()
        await done

    async def _context(self, db: Database, user: str) -> ssl.SSLContext:
        now = self.deps.clock.now()
        key = (db.metadata.name, user)
        hit = self._cache.get(key)
        if hit is not None and hit.cert.expires - _RENEW_BEFORE > now:
            return hit.context
        cert = await self.deps.certs(user)
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cadata=db.spec.tls.ca_pem or cert.ca_pem
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = db.spec.tls.mode == "verify-full"
        with tempfile.TemporaryDirectory(prefix="bastion-db-") as tmp:
            cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_file.write_text(cert.cert_pem)
            key_file.touch(mode=0o600)
            key_file.write_text(cert.key_pem)
            ctx.load_cert_chain(cert_file, key_file)
        self._cache[key] = _Cached(cert, ctx)
        return ctx

    async def _connect(self, db: Database, user: str) -> asyncio.Transport:
        if not user:
            raise ConnectionProblem("no database user")
        loop = asyncio.get_running_loop()
        host, port = db.address()
        transport, hello = await loop.create_connection(_SSLAnswer, host, port)
        if db.spec.tls.mode == "insecure-plaintext":
            log.warning("db agent: PLAINTEXT connection to %s (tls.mode insecure-plaintext)", host)
            return transport
        try:
            context = await self._context(db, user)
            transport.write(SSL_REQUEST)
            answer = await hello.answer
            if answer != b"S":
                raise ConnectionProblem(
                    f"the database does not accept TLS (answered the SSLRequest with {answer!r})"
                )
            tls = await loop.start_tls(
                transport, hello, context, server_hostname=db.spec.tls.server_name or host
            )
        except BaseException:
            transport.abort()
            raise
        if tls is None:
            raise ConnectionProblem("TLS to the database failed")
        return tls


class _SSLAnswer(asyncio.Protocol):
    """Holds the connection until the one-byte answer to the SSLRequest."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(data[:1])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionProblem("the database closed the connection"))
