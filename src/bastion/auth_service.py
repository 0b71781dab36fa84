"""Run the auth service: open the backend, initialise the cluster, serve the mTLS API.

Also writes the two local identities that live in the data dir: auth's own TLS host certificate
(``host/``) and the local admin identity (``admin/``) that ``bctl --data-dir`` uses on this host.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.api.app import build_app
from bastion.api.proxy_header import (
    ClientAddresses,
    TrustedSources,
    read_proxy_header,
    set_lowat,
)
from bastion.api.tls import server_context
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend import open_backend
from bastion.backend.base import Backend
from bastion.ca.keys import load_or_create_kek, spki_pin
from bastion.clock import Clock, SystemClock
from bastion.config.schema import FileConfig
from bastion.errors import BastionError
from bastion.files import write_private_file
from bastion.protocols.addr import parse_addr
from bastion.rbac.builtin import BUILTIN_ROLES
from bastion.rbac.checker import RoleSet
from bastion.recording.factory import open_store
from bastion.tasks import TaskSet
from bastion.types.identity import Identity

__all__ = ["ADMIN_USER", "AuthService", "write_private_file"]

log = structlog.get_logger("bastion.auth")
ADMIN_USER = "bastion-admin"
ADMIN_TTL = timedelta(days=7)
ADMIN_REFRESH = timedelta(hours=12)
HANDSHAKE_TIMEOUT = 10.0
"""Seconds from accept to a finished TLS handshake (PROXY header included)."""


def _new_key_pem() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return pem, pub


@dataclass(slots=True)
class AuthService:
    config: FileConfig
    clock: Clock
    backend: Backend
    server: AuthServer
    ca_pin: str = ""
    addr: tuple[str, int] = ("127.0.0.1", 3025)
    _runner: web.AppRunner | None = None
    _sock: socket.socket | None = None
    _tasks: TaskSet = field(default_factory=TaskSet)

    @classmethod
    async def open(cls, config: FileConfig, clock: Clock | None = None) -> AuthService:
        clock = clock or SystemClock()
        data = config.data_path()
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = config.storage
        backend = await open_backend(
            storage.type,
            path=storage.path or str(data / "backend.sqlite"),
            dsn=storage.dsn,
            clock=clock,
            writer=storage.writer,
        )
        kek = load_or_create_kek(Path(config.auth_service.kek_file or data / "keys" / "kek"))
        host, port = parse_addr(config.auth_service.listen_addr, 3025)
        public = config.auth_service.public_addr
        public_host = parse_addr(public[0], port) if public else (host, port)
        url_host = public_host[0] if public_host[0] not in ("0.0.0.0", "::") else "127.0.0.1"
        deps = AuthDeps(
            backend=backend,
            clock=clock,
            cluster=config.resolved_cluster_name(),
            kek=kek,
            key_algorithm=config.auth_service.key_algorithm,
            public_url=f"https://{url_host}:{public_host[1]}",
            webauthn_origins=_webauthn_origins(config, f"{url_host}:{public_host[1]}"),
            audit_witness=config.auth_service.audit.witness,
            recordings=open_store(config.auth_service.recordings, data),
            recording_max_bytes=config.auth_service.recordings.max_bytes,
            notifications=config.auth_service.notifications.with_data_dir(data),
            risk=config.risk,
            data_dir=data,
        )
        server = AuthServer(deps)
        return cls(config=config, clock=clock, backend=backend, server=server, addr=(host, port))

    async def start(self) -> list[str]:
        """Initialise the cluster and start serving. Returns what was created on first start."""
        created = await self.server.init(self.config.auth_service.second_factor)
        await self._write_host_identity()
        await self.write_admin_identity()
        tls_user = await self.server.issuer.ca("tls_user")
        tls_host = await self.server.issuer.ca("tls_host")
        client_cas = "".join(
            k.cert_pem for ca in (tls_user, tls_host) for k in ca.spec.trusted_keys()
        )
        host_dir = self.config.data_path() / "host"
        ctx = server_context(host_dir / "auth.crt", host_dir / "auth.key", client_cas)
        self.ca_pin = self._pin(tls_host.spec.active_keys[0].cert_pem)
        limits = self.config.auth_service
        trusted = TrustedSources(limits.trusted_proxy_sources)
        clients = ClientAddresses() if trusted else None
        app = build_app(
            self.server,
            rate=limits.rate_limit.average,
            burst=limits.rate_limit.burst,
            max_body=limits.max_request_bytes,
            clients=clients,
        )
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        if clients is not None:
            port = await self._serve_proxied(ctx, trusted, clients)
        else:
            site = web.TCPSite(
                self._runner, self.addr[0], self.addr[1], ssl_context=ctx, reuse_address=True
            )
            await site.start()
            server = getattr(site, "_server", None)
            port = server.sockets[0].getsockname()[1] if server and server.sockets else 0
        if self.addr[1] == 0 and port:
            self.addr = (self.addr[0], port)
            self._write_admin_profile()
        log.info("auth service listening", addr=f"{self.addr[0]}:{self.addr[1]}")
        return created

    async def _serve_proxied(
        self, ctx: ssl.SSLContext, trusted: TrustedSources, clients: ClientAddresses
    ) -> int:
        """Serve the API on our own accept loop: a connection from ``trusted`` may start with a
        PROXY protocol header (a proxy passing a client's TLS through, or a load balancer),
        whose client address the app then sees. Returns the bound port."""
        sock = socket.create_server(self.addr, backlog=1024)
        sock.setblocking(False)
        self._sock = sock
        self._tasks.spawn(self._accept_loop(sock, ctx, trusted, clients), "auth-accept")
        return int(sock.getsockname()[1])

    async def _accept_loop(
        self,
        lsock: socket.socket,
        ctx: ssl.SSLContext,
        trusted: TrustedSources,
        clients: ClientAddresses,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.error("auth accept failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            self._tasks.spawn(
                self._accept_one(sock, str(addr[0]), ctx, trusted, clients), "auth-conn"
            )

    async def _accept_one(
        self,
        sock: socket.socket,
        peer_ip: str,
        ctx: ssl.SSLContext,
        trusted: TrustedSources,
        clients: ClientAddresses,
    ) -> None:
        assert self._runner is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                got = await read_proxy_header(sock, peer_ip, trusted)
                set_lowat(sock, 1)
                transport, _ = await loop.connect_accepted_socket(
                    self._runner.server, sock, ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
        except (BastionError, OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("auth: connection refused", peer=peer_ip, reason=str(exc) or repr(exc))
            sock.close()
            return
        if got.source is not None:
            clients.set(transport, got.source.host)

    @staticmethod
    def _pin(cert_pem: str) -> str:
        from cryptography import x509

        from bastion.auth.issuer import parse_public_key

        key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return spki_pin(parse_public_key(pem.decode()))

    async def _write_host_identity(self) -> None:
        key_pem, pub = _new_key_pem()
        names, ips = self.config.auth_public_names()
        identity = Identity(
            cluster=self.server.cluster,
            user="auth",
            kind="host",
            roles=("auth",),
            host_id="auth",
            expires=self.clock.now() + timedelta(days=365),
        )
        certs = await self.server.issuer.issue_host(
            identity, pub, ["auth", *names], names, ips, timedelta(days=365), "local"
        )
        host_dir = self.config.data_path() / "host"
        write_private_file(host_dir / "auth.key", key_pem)
        write_private_file(host_dir / "auth.crt", certs.tls_cert)

    async def write_admin_identity(self) -> None:
        """Issue the local admin identity (role editor) that bctl uses on the auth host."""
        key_pem, pub = _new_key_pem()
        editor = BUILTIN_ROLES["editor"]
        identity = self.server.issuer.user_identity(
            cluster=self.server.cluster,
            user=ADMIN_USER,
            roles=[editor.name],
            traits={},
            role_set=RoleSet.from_roles([editor], {}),
            requested_ttl=ADMIN_TTL,
            kind="admin",
        )
        identity = identity.model_copy(update={"expires": self.clock.now() + ADMIN_TTL})
        certs = await self.server.issuer.issue_user(identity, pub, "local")
        admin = self.config.data_path() / "admin"
        write_private_file(admin / "identity.key", key_pem)
        write_private_file(admin / "identity.crt", certs.tls_cert)
        write_private_file(admin / "ca.pem", certs.tls_host_ca)
        self._write_admin_profile()

    def _write_admin_profile(self) -> None:
        host, port = self.addr
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        write_private_file(
            self.config.data_path() / "admin" / "profile.json",
            json.dumps({"addr": f"{host}:{port}", "cluster": self.server.cluster}),
        )

    async def refresh_admin_identity_forever(self) -> None:
        while True:
            await asyncio.sleep(ADMIN_REFRESH.total_seconds())
            await self.write_admin_identity()

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        await self._tasks.cancel_all(timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.backend.close()


def client_ssl_context(
    ca_pem: str, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def _webauthn_origins(config: FileConfig, auth_addr: str) -> tuple[str, ...]:
    """Where users reach the login endpoints: the proxy's public addresses (or its listen
    address), then auth's. The first one's host becomes the default WebAuthn RP id."""
    addrs: list[str] = []
    proxy = config.proxy_service
    if proxy.enabled:
        for addr in proxy.public_addr or [proxy.listen_addr]:
            host, port = parse_addr(addr, 3080)
            host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            addrs.append(f"{host}:{port}")
    addrs.append(auth_addr)
    return tuple(f"https://{a}" for a in addrs)
