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

Warm spare connections (PostgreSQL over TLS, ``db_service.warm_connections``, on by default):
after a session of (database, db user) opened, the agent makes one spare connection for that
pair in the background, taken up to the end of step 3, so the pair's next session only sends
its StartupMessage (:mod:`bastion.agent.db_spares` decides which pairs keep one and for how
long). A spare that died or whose certificate is due for renewal is closed and the session
connects afresh; cancel requests and provisioning connections always connect afresh.

The database authenticates the db user by the certificate (``pg_hba.conf``: ``hostssl ...
cert``), so no password exists anywhere. Failures reach the client as an ErrorResponse
(SQLSTATE 08006) naming the database, never as a silently dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.agent.db_provision import DbAdmin, Provisioner, x509_subject
from bastion.agent.db_spares import SparePool, WarmConnections
from bastion.agent.pump import pump_pair
from bastion.audit.emitter import Emitter
from bastion.clock import Clock
from bastion.errors import BastionError, ConnectionProblem, NotFound, RemoteProtocolError
from bastion.protocols import mysql
from bastion.protocols.postgres import (
    SSL_REQUEST,
    build_cancel_request,
    build_startup,
    error_response,
)
from bastion.types.database import Database

__all__ = [
    "DbAgent",
    "DbAgentDeps",
    "DbClientCert",
    "DbClientCerts",
    "OpenedSession",
    "SessionRefused",
]

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
    admins: Mapping[str, DbAdmin] = field(default_factory=dict)
    """Per database: the admin account that provisions users (``create_db_user``)."""
    audit: Emitter | None = None
    """Where ``db.user.create`` / ``db.user.disable`` go (None: logged only)."""
    warm_connections: bool = True
    """PostgreSQL over TLS: keep one spare connection (TLS done, no StartupMessage) per
    recently used (database, db user) pair (``db_service.warm_connections``)."""
    spare_ttl: float = 10.0
    """Seconds a spare waits for a session before it is closed (PostgreSQL's
    ``authentication_timeout`` is 60 s by default)."""


class SessionRefused(ConnectionProblem):
    """The agent could not open the database session; ``answer`` tells the client (in its
    protocol: PostgreSQL ErrorResponse, MySQL ERR packet)."""

    def __init__(self, message: str, answer: bytes) -> None:
        super().__init__(message)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A database connection the agent opened for a session, not yet relayed: the relay
    attaches its protocol to ``server``, sends ``to_server`` (the PostgreSQL StartupMessage)
    to it and ``to_client`` (the MySQL server's OK) to the client, and awaits ``release``
    once the session ended (``create_db_user``: the user is disabled)."""

    server: asyncio.Transport
    to_server: bytes
    to_client: bytes
    release: Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Cached:
    cert: DbClientCert
    context: ssl.SSLContext


@dataclass(slots=True)
class DbAgent:
    """Serves the ``db`` streams of one agent (several databases)."""

    deps: DbAgentDeps
    _cache: dict[tuple[str, str], _Cached] = field(default_factory=dict)
    provisioner: Provisioner | None = None
    server_versions: dict[str, str] = field(default_factory=dict)
    """MySQL: each database's version as its server's latest greeting gave it (reported with
    the heartbeats: ``bsh proxy db`` greets its clients as that server)."""
    warm: WarmConnections = field(init=False)
    """The warm spare connections (``warm.pool.stats``: how many were made, taken, expired)."""

    def __post_init__(self) -> None:
        self.warm = WarmConnections(
            SparePool(ttl=timedelta(seconds=self.deps.spare_ttl)),
            self.deps.clock, self._connect, self._renew_at, self.deps.connect_timeout,
        )  # fmt: skip

        async def subject_of(user: str) -> str:
            return x509_subject((await self.deps.certs(user)).cert_pem)

        self.provisioner = Provisioner(
            admins=self.deps.admins,
            connect_pg=self._connect,
            connect_mysql=self._connect_mysql,
            subject_of=subject_of,
            audit=self.deps.audit,
        )

    def database(self, name: str) -> Database:
        for db in self.deps.databases:
            if db.metadata.name == name:
                return db
        raise NotFound(f'database "{name}" is not served by this agent')

    async def on_stream(self, stream: asyncio.Transport, header: dict[str, Any]) -> None:
        """Serve one ``type: db`` stream until either end closes."""
        if header.get("cancel") is not None:
            params = {str(k): str(v) for k, v in dict(header.get("params") or {}).items()}
            await self._cancel(
                stream, str(header.get("db", "")), params.get("user", ""), header["cancel"]
            )
            return
        try:
            opened = await self.open(header)
        except SessionRefused as exc:
            stream.write(exc.answer)
            stream.close()
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        a, b = pump_pair(done)
        server = opened.server
        server.set_protocol(b)
        b.connection_made(server)
        stream.set_protocol(a)
        a.connection_made(stream)
        if opened.to_client:
            stream.write(opened.to_client)  # MySQL: the server's OK answers the handshake
        if opened.to_server:
            server.write(opened.to_server)  # PostgreSQL: the StartupMessage
        if stream.is_reading():  # held bytes are delivered by resume_reading
            stream.pause_reading()
        stream.resume_reading()
        try:
            await done
        finally:
            await opened.release()

    async def open(self, header: dict[str, Any]) -> OpenedSession:
        """Connect to the database of a ``type: db`` header as its db user (provisioned first
        with ``create_db_user``): the part of :meth:`on_stream` before the relay, also used
        directly by a proxy in this process (:meth:`bastion.proxy.db_route.DbRoute.add_local_agent`:
        no tunnel in between, the same TLS with the db client certificate to the database).

        Raises:
            SessionRefused: with the answer for the client (ErrorResponse 08006 / ERR packet).
        """
        params = {str(k): str(v) for k, v in dict(header.get("params") or {}).items()}
        name = str(header.get("db", ""))
        is_mysql = header.get("protocol") == "mysql"
        first = b""
        provision = header.get("provision")
        provisioned: Database | None = None
        who = {
            "user": str(header.get("user", "")),
            "remote_addr": str(header.get("client_addr", "")),
        }
        try:
            db = self.database(name)
            if (db.spec.protocol == "mysql") != is_mysql:
                raise ConnectionProblem(f"the database speaks {db.spec.protocol}")
            if isinstance(provision, list) and self.provisioner is not None:
                grants = [str(g) for g in provision]
                await self.provisioner.acquire(db, params.get("user", ""), grants, who)
                provisioned = db
            async with asyncio.timeout(self.deps.connect_timeout):
                if is_mysql:
                    attrs = {str(k): str(v) for k, v in dict(header.get("attrs") or {}).items()}
                    attrs["bastion_user"] = str(header.get("user", ""))
                    server, first = await self._connect_mysql(db, params, attrs)
                else:
                    server = await self._session_connection(db, params.get("user", ""))
        except _ServerRefused as exc:
            log.info("db agent: %s refused %s: %s", name, params.get("user", ""), exc.message)
            await self._release(provisioned, params, who)
            answer = mysql.err_packet(2, exc.mysql_code, exc.state, f'database "{name}": {exc}')
            raise SessionRefused(exc.message, answer) from None
        except (BastionError, OSError, TimeoutError, ssl.SSLError) as exc:
            why = exc.message if isinstance(exc, BastionError) else str(exc) or "timed out"
            log.warning("db agent: cannot reach %s: %s", name, why)
            await self._release(provisioned, params, who)
            text = f'database "{name}": {why}'
            if is_mysql:
                answer = mysql.err_packet(2, mysql.ER_NET_READ_ERROR, "08S01", text)
                raise SessionRefused(text, answer) from None
            raise SessionRefused(text, error_response(text, code="08006")) from None

        async def release() -> None:
            await self._release(provisioned, params, who)

        return OpenedSession(
            server=server,
            to_server=b"" if is_mysql else build_startup(params),
            to_client=first if is_mysql else b"",
            release=release,
        )

    async def close(self) -> None:
        """Close the spare connections (the agent stops)."""
        await self.warm.close()

    def _warm(self, db: Database) -> bool:
        return (
            self.deps.warm_connections
            and db.spec.protocol == "postgres"
            and db.spec.tls.mode != "insecure-plaintext"
        )

    async def _session_connection(self, db: Database, user: str) -> asyncio.Transport:
        if user and self._warm(db):
            return await self.warm.connection(db, user)
        return await self._connect(db, user)

    async def _renew_at(self, db: Database, user: str) -> datetime:
        """When the certificate of the context :meth:`_connect` uses now is due for renewal."""
        await self._context(db, user)
        return self._cache[(db.metadata.name, user)].cert.expires - _RENEW_BEFORE

    async def _release(
        self, db: Database | None, params: dict[str, str], who: dict[str, str]
    ) -> None:
        if db is not None and self.provisioner is not None:
            await self.provisioner.release(db, params.get("user", ""), who)

    async def _cancel(self, stream: asyncio.Transport, name: str, user: str, key: Any) -> None:
        """Forward a PostgreSQL CancelRequest (the proxy matched its key to a live session of
        this database) over a new TLS connection as the session's db user."""
        try:
            pid, secret = int(key[0]), int(key[1])
            db = self.database(name)
            async with asyncio.timeout(self.deps.connect_timeout):
                server = await self._connect(db, user)
            server.write(build_cancel_request(pid, secret))
            server.close()
        except (
            BastionError,
            OSError,
            TimeoutError,
            ssl.SSLError,
            LookupError,
            TypeError,
            ValueError,
        ) as exc:
            log.warning("db agent: cancel for %s not sent: %s", name, exc)
        finally:
            stream.close()

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

    async def _connect_mysql(
        self, db: Database, params: dict[str, str], attrs: dict[str, str]
    ) -> tuple[asyncio.Transport, bytes]:
        """Handshake with a MySQL/MariaDB server as the db user: TLS with the db client
        certificate (``REQUIRE SUBJECT``), an empty password. Returns the transport and the
        server's OK renumbered as the answer to the client's HandshakeResponse (sequence 2).

        Raises:
            _ServerRefused: the server answered with an ERR packet.
            ConnectionProblem: no TLS offered, an unsupported auth exchange.
        """
        user = params.get("user", "")
        if not user:
            raise ConnectionProblem("no database user")
        loop = asyncio.get_running_loop()
        host, port = db.address()
        transport, packets = await loop.create_connection(_Packets, host, port)
        try:
            greeting = mysql.parse_handshake((await packets.next()).payload)
            self.server_versions[db.metadata.name] = greeting.server_version
            client_caps = _int(params, "capabilities")
            missing = mysql.answer_formats_missing(client_caps, greeting.capabilities)
            if missing:  # its answers would be in a format the client does not parse
                raise ConnectionProblem(
                    f"the database (version {greeting.server_version}) does not offer"
                    f" {', '.join(missing)}, which the client was offered in the name of"
                    " another version: connect again (bsh proxy db greets as the version"
                    " the agent reports; the proxy's MySQL port as"
                    " proxy_service.mysql_server_version)"
                )
            caps = mysql.negotiate(client_caps, greeting.capabilities)
            caps |= greeting.capabilities & mysql.CLIENT_PLUGIN_AUTH
            database = params.get("database", "")
            if database:
                caps |= mysql.CLIENT_CONNECT_WITH_DB
            else:
                caps &= ~mysql.CLIENT_CONNECT_WITH_DB
            charset = _int(params, "charset") or 45
            max_packet = _int(params, "max_packet") or 1 << 24
            seq = 1
            if db.spec.tls.mode == "insecure-plaintext":
                log.warning("db agent: PLAINTEXT connection to %s (insecure-plaintext)", host)
            else:
                if not greeting.capabilities & mysql.CLIENT_SSL:
                    raise ConnectionProblem("the database does not offer TLS (ssl_cert unset?)")
                context = await self._context(db, user)
                transport.write(
                    mysql.build_packet(1, mysql.build_ssl_request(caps, max_packet, charset))
                )
                caps |= mysql.CLIENT_SSL
                tls = await loop.start_tls(
                    transport, packets, context, server_hostname=db.spec.tls.server_name or host
                )
                if tls is None:
                    raise ConnectionProblem("TLS to the database failed")
                transport = tls
                seq = 2
            response = mysql.HandshakeResponse(
                caps, max_packet, charset, user, b"", database,
                greeting.plugin or "mysql_native_password", attrs,
            )  # fmt: skip
            transport.write(mysql.build_packet(seq, mysql.build_handshake_response(response)))
            for _ in range(4):
                answer = await packets.next()
                kind = answer.payload[:1]
                if kind == b"\x00":
                    return transport, mysql.build_packet(2, answer.payload)
                if kind == b"\xff":
                    raise _ServerRefused(*mysql.parse_err(answer.payload))
                if kind != b"\xfe":
                    raise ConnectionProblem(
                        f"the database asks for more authentication (plugin {greeting.plugin})"
                        f": use REQUIRE SUBJECT with an empty password for {user}"
                    )
                # AuthSwitchRequest: answer with the empty password of the asked plugin.
                transport.write(mysql.build_packet(answer.seq + 1, b""))
            raise ConnectionProblem("the database keeps switching authentication methods")
        except BaseException:
            transport.abort()
            raise


def _int(params: dict[str, str], key: str) -> int:
    try:
        return int(params.get(key, "0"))
    except ValueError:
        return 0


class _ServerRefused(ConnectionProblem):
    """The MySQL server answered the handshake with an ERR packet."""

    def __init__(self, code: int, state: str, message: str) -> None:
        super().__init__(message)
        self.mysql_code = code or mysql.ER_ACCESS_DENIED
        self.state = state or "28000"


class _Packets(asyncio.Protocol):
    """Holds a MySQL connection during the handshake: queues its logical packets."""

    def __init__(self) -> None:
        self._reader = mysql.PacketReader(mysql.MAX_HANDSHAKE_LENGTH)
        self._queue: asyncio.Queue[mysql.Packet | BaseException] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        try:
            for packet in self._reader.feed(data):
                self._queue.put_nowait(packet)
        except RemoteProtocolError as exc:
            self._queue.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(ConnectionProblem("the database closed the connection"))

    async def next(self) -> mysql.Packet:
        got = await self._queue.get()
        if isinstance(got, BaseException):
            raise got
        return got


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
