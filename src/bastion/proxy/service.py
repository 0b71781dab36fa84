"""The proxy service: one TLS port serving the web/API, SSH routes and agent tunnels.

What the proxy needs of auth is one :class:`ProxyLink`, so the same proxy runs two ways:

* **in the auth process** (the all-in-one, :meth:`ProxyLink.in_process`): the auth API app is
  served in-process on the proxy's port (so ``bsh login --proxy=HOST:3080`` and ``bctl`` work
  through it), nodes, roles, users and locks are read from the backend, and events go straight
  into the audit log;
* **in its own process** (``bastion start --roles=proxy --auth=HOST:3025``, built by
  :mod:`bastion.process`): it joined with a ``proxy`` token and holds a host identity; nodes,
  roles, users and locks come from ``GET /v1/watch`` caches, events go through the durable spool
  the agents use, and the web/API route is passed through to auth with TLS intact behind a PROXY
  protocol header (:class:`~bastion.proxy.listener.WebUpstream`). It advertises itself with
  heartbeats, so agents keep a reverse tunnel to each proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.api.app import build_app
from bastion.api.ratelimit import RateLimiter
from bastion.audit.emitter import Emitter
from bastion.auth.gate import Gate
from bastion.auth.recordings import InProcessTarget, RecordingService
from bastion.auth.server import AuthServer
from bastion.auth.sessions import InProcessTrackers, SessionTrackerService
from bastion.auth.trust import TrustService
from bastion.auth_service import AuthService
from bastion.clock import Clock
from bastion.config.apps import app_cert_names, app_domain
from bastion.config.schema import FileConfig
from bastion.live.moderated import TrackerReporter
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.protocols.addr import parse_addr
from bastion.proxy.app_route import AppBackend, AppRoute, AppRouteDeps
from bastion.proxy.cluster_route import ClusterHub, HTTPDialer, HubDeps, TrustSource
from bastion.proxy.db_moderation import DB_SESSIONS_HOST, DbModerationHub
from bastion.proxy.db_route import DatabaseDirectory, DbRoute, DbRouteDeps, StoreDatabases
from bastion.proxy.listener import (
    ListenerConfig,
    ListenerDeps,
    ProxyListener,
    ProxyTLS,
    WebUpstream,
)
from bastion.proxy.mysql_listener import MySQLListener
from bastion.proxy.ssh_route import (
    NodeDirectory,
    NodePinner,
    RoleSource,
    SSHRoute,
    SSHRouteDeps,
)
from bastion.recording.spool import Spool
from bastion.recording.uploader import Uploader, UploadTarget
from bastion.services.cache import StoreRoleSource
from bastion.services.node_pins import NodePins
from bastion.services.store import ResourceStore
from bastion.tunnel.server import TunnelServer
from bastion.types.identity import Identity
from bastion.types.inventory import Node
from bastion.web.apps import APP_ACCESS

__all__ = ["ALL_IN_ONE_PROXY", "ProxyLink", "ProxyService", "public_names"]

log = structlog.get_logger("bastion.proxy")
PROXY_CERT_TTL = timedelta(days=365)
ALL_IN_ONE_PROXY = "proxy"
"""The host id of the proxy inside an auth process (the all-in-one ``bastion start``)."""


class StoreNodeDirectory:
    def __init__(self, nodes: ResourceStore[Node]) -> None:
        self._nodes = nodes

    async def list_nodes(self) -> list[Node]:
        return await self._nodes.list()


@dataclass(slots=True)
class ProxyLink:
    """Everything the proxy needs of auth, in its process or over the API."""

    cluster: str
    tls: ProxyTLS
    nodes: NodeDirectory
    roles: RoleSource
    audit: Emitter
    gate: Gate
    pins: NodePinner | None
    locks: LockWatcher | None
    web: Callable[[], asyncio.BaseProtocol] | None = None
    """The in-process web/API app (a protocol factory)."""
    web_upstream: WebUpstream | None = None
    """Or: the auth servers the web/API route is passed through to."""
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    databases: DatabaseDirectory | None = None
    """Where the database route finds ``db`` resources (None: no database route)."""
    trust: TrustSource | None = None
    """Trusted clusters: leaf tunnels and routes through them (both sides in the auth process;
    a proxy of its own takes leaf tunnels from its cache: :class:`CacheTrust`)."""
    apps: AppBackend | None = None
    """App access for the app route: auth's own in the all-in-one, or
    :class:`~bastion.proxy.app_remote.RemoteApps` (auth's API) in a proxy of its own."""
    recordings: UploadTarget | None = None
    """Where the database route uploads its session recordings: auth's recording service in
    the auth process (when auth stores recordings), or auth's API in a proxy of its own (as a
    remote node uploads); None: database sessions are audited, not recorded."""
    session_trackers: TrackerReporter | None = None
    """Where the proxy reports its moderated database sessions (in the auth process only;
    without it such sessions are refused: :mod:`bastion.proxy.db_moderation`)."""
    on_tls: list[Callable[[ProxyTLS], None]] = field(default_factory=list)
    """Told of a renewed certificate (a proxy in its own process renews its host identity):
    :meth:`ProxyService.use_tls` is added here."""

    def renewed(self, tls: ProxyTLS) -> None:
        """A renewed proxy certificate: serve it from the next handshake on."""
        self.tls = tls
        for swap in self.on_tls:
            swap(tls)

    @classmethod
    async def in_process(
        cls, config: FileConfig, auth: AuthService, clock: Clock, locks: LockWatcher | None
    ) -> ProxyLink:
        """The all-in-one: the auth server of this process."""
        server = auth.server
        limits = config.auth_service
        app = build_app(
            server,
            rate=limits.rate_limit.average,
            burst=limits.rate_limit.burst,
            max_body=limits.max_request_bytes,
        )
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        key_pem, pub = _new_web_key_pem()
        names, ips = public_names(config)
        domain = app_domain(config.proxy_service.public_addr, config.proxy_service.listen_addr)
        names += app_cert_names(domain, [a.name for a in config.app_service.apps])
        identity = Identity(
            cluster=server.cluster,
            user="proxy",
            kind="host",
            roles=("proxy",),
            host_id=ALL_IN_ONE_PROXY,
            expires=clock.now() + PROXY_CERT_TTL,
        )
        certs = await server.issuer.issue_host(
            identity, pub, ["proxy", *names], names, ips, PROXY_CERT_TTL, "local"
        )
        tls = ProxyTLS(
            cert_pem=certs.tls_cert,
            key_pem=key_pem.decode(),
            user_ca_pem=certs.tls_user_ca,
            host_ca_pem=certs.tls_host_ca,
        )
        assert runner.server is not None
        return cls(
            cluster=server.cluster,
            tls=tls,
            nodes=StoreNodeDirectory(server.nodes),
            roles=StoreRoleSource(server.watched_roles),
            audit=server.audit,
            gate=Gate.for_auth(server),
            pins=NodePins(server.deps.backend),
            locks=locks,
            web=runner.server,
            on_close=[runner.cleanup],
            databases=StoreDatabases(server.watched_databases, clock),
            trust=_trust_service(server),
            apps=app[APP_ACCESS],
            session_trackers=db_session_trackers(server),
            recordings=(
                InProcessTarget(RecordingService(server))
                if server.deps.recordings is not None
                else None
            ),
        )


def public_names(config: FileConfig) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the proxy's certificate: auth's names, the listen host and
    ``proxy_service.public_addr``."""
    names, ips = config.auth_public_names()
    host, _ = parse_addr(config.proxy_service.listen_addr, 3080)
    extra = [parse_addr(a, 3080)[0] for a in config.proxy_service.public_addr]
    for name in [host, *extra]:
        (ips if _is_ip(name) else names).append(name)
    return sorted(set(names)), sorted({i for i in ips if i not in ("0.0.0.0", "::")})


class ProxyService:
    def __init__(
        self, config: FileConfig, link: ProxyLink, registry: LiveRegistry, clock: Clock
    ) -> None:
        self.config = config
        self.link = link
        self.locks = link.locks
        self.registry = registry
        self.clock = clock
        proxy = config.proxy_service
        self.tunnel = TunnelServer(
            registry,
            clock,
            admission=RateLimiter(
                rate=proxy.tunnel_admission_rate, burst=proxy.tunnel_admission_burst
            ),
        )
        self.listener: ProxyListener | None = None
        link.on_tls.append(self.use_tls)
        self.db: DbRoute | None = None
        self.mysql: MySQLListener | None = None
        self.app: AppRoute | None = None
        self.clusters: ClusterHub | None = None
        if link.trust is not None:
            self.clusters = ClusterHub(
                HubDeps(
                    trust=link.trust,
                    cluster=link.cluster,
                    cert_pem=link.tls.cert_pem,
                    key_pem=link.tls.key_pem,
                    audit=link.audit,
                    clock=clock,
                    registry=registry,
                    nodes=link.nodes,
                    roles=link.roles,
                    gate=link.gate,
                )
            )

    async def start(self) -> tuple[str, int]:
        """Start serving; returns the bound address (useful with port 0)."""
        link = self.link
        db_sessions = None
        if link.databases is not None and link.session_trackers is not None:
            db_sessions = DbModerationHub(link.roles, link.audit, self.clock, link.session_trackers)
        ssh = SSHRoute(
            SSHRouteDeps(
                nodes=link.nodes,
                roles=link.roles,
                tunnel=self.tunnel,
                audit=link.audit,
                registry=self.registry,
                clock=self.clock,
                cluster=link.cluster,
                locks=link.locks,
                gate=link.gate,
                pins=link.pins,
                clusters=self.clusters,
                db_sessions=db_sessions,
            )
        )
        self.db = None
        if link.databases is not None:
            self.db = DbRoute(
                DbRouteDeps(
                    databases=link.databases,
                    roles=link.roles,
                    tunnel=self.tunnel,
                    audit=link.audit,
                    registry=self.registry,
                    clock=self.clock,
                    locks=link.locks,
                    gate=link.gate,
                    moderation=db_sessions,
                    recordings=(  # recorded like SSH sessions (docs/database-access.md)
                        Uploader(
                            Spool(self.config.data_path() / "proxy" / "db-recording-spool"),
                            link.recordings,
                        )
                        if link.recordings is not None
                        else None
                    ),
                )
            )
        cfg = self.config.proxy_service
        self.app = None
        if link.apps is not None:  # apps at NAME.<domain> (docs/app-access.md)
            self.app = AppRoute(
                AppRouteDeps(
                    access=link.apps,
                    domain=app_domain(cfg.public_addr, cfg.listen_addr),
                    audit=link.audit,
                    registry=self.registry,
                    clock=self.clock,
                    locks=link.locks,
                    gate=link.gate,
                    tunnel=self.tunnel,
                    audit_requests=cfg.app_audit_requests,
                    audit_request_sample=cfg.app_audit_request_sample,
                )
            )
        else:  # in its own process: app hosts get a one-line refusal, not auth's pages
            domain = app_domain(cfg.public_addr, cfg.listen_addr)
            self.app = AppRoute.refusing(domain, link.audit, self.registry, self.clock)
        await self.app.start()
        host, port = parse_addr(cfg.listen_addr, 3080)
        self.listener = ProxyListener(
            ListenerConfig(
                host=host,
                port=port,
                handshake_timeout=cfg.handshake_timeout.total_seconds(),
                trusted_proxy_sources=tuple(cfg.trusted_proxy_sources),
                max_unauthenticated_per_ip=cfg.max_unauthenticated_per_ip,
            ),
            ListenerDeps(
                tls=link.tls,
                clock=self.clock,
                audit=link.audit,
                tunnel=self.tunnel,
                ssh=ssh,
                web=link.web,
                gate=link.gate,
                web_upstream=link.web_upstream,
                db=self.db,
                app=self.app,
                clusters=self.clusters,
            ),
        )
        await self.listener.start()
        if cfg.mysql_listen_addr and self.db is not None:  # docs/database-access.md
            self.mysql = MySQLListener(
                cfg.mysql_listen_addr, link.tls, self.db, self.clock, link.audit,
                cfg.handshake_timeout.total_seconds(), cfg.mysql_server_version,
            )  # fmt: skip
            await self.mysql.start()
        if self.clusters is not None:
            self.clusters.attach(self.listener, ssh)
            await self.clusters.start()
        log.info("proxy listening", addr=f"{host}:{self.listener.port}")
        return host, self.listener.port

    def use_tls(self, tls: ProxyTLS) -> None:
        """New handshakes use ``tls`` (the renewed certificate and current trust anchors)."""
        if self.listener is not None:
            self.listener.use_tls(tls)
            log.info("proxy certificate swapped in")
        if self.mysql is not None:
            self.mysql.use_tls(tls)

    async def close(self) -> None:
        if self.clusters is not None:
            await self.clusters.close()
        if self.listener is not None:
            await self.listener.close()
        if self.mysql is not None:
            await self.mysql.close()
        if self.db is not None:
            await self.db.close()
        if self.app is not None:
            await self.app.close()
        await self.tunnel.close()
        for close in self.link.on_close:
            await close()


def _trust_service(server: AuthServer) -> TrustService:
    """The auth server's trusted clusters, able to reach roots through this process."""
    trust = TrustService(server, HTTPDialer())
    trust.register()
    return trust


def _new_web_key_pem() -> tuple[bytes, str]:
    """The proxy's TLS key: ECDSA P-256, because browsers (Chromium, Firefox) offer no Ed25519
    TLS signature scheme and fail the handshake with an Ed25519 server key."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, pub.decode()


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def db_session_trackers(server: AuthServer) -> InProcessTrackers:
    """The in-process reporter of the proxy's moderated database sessions: trackers with the
    host id :data:`~bastion.protocols.sessionjoin.DB_SESSIONS_HOST`."""
    host = Identity(
        cluster=server.cluster,
        user=DB_SESSIONS_HOST,
        kind="host",
        roles=("node",),
        host_id=DB_SESSIONS_HOST,
        expires=server.clock.now() + timedelta(days=3650),
    )
    return InProcessTrackers(SessionTrackerService(server), host)
