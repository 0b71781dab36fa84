"""The proxy service: one TLS port serving the web/API, SSH routes and agent tunnels.

In this release the proxy runs in the auth process: it serves the auth API app in-process on its
port (so ``bsh login --proxy=HOST:3080`` and ``bctl`` work through it), reads nodes and roles from
the backend, and audits through the auth server's log.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.api.app import build_app
from bastion.auth.gate import Gate
from bastion.auth_service import AuthService
from bastion.clock import Clock
from bastion.config.schema import FileConfig
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.protocols.addr import parse_addr
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.proxy.ssh_route import SSHRoute, SSHRouteDeps
from bastion.services.cache import StoreRoleSource
from bastion.services.node_pins import NodePins
from bastion.services.store import ResourceStore
from bastion.tunnel.server import TunnelServer
from bastion.types.identity import Identity
from bastion.types.inventory import Node

__all__ = ["ProxyService"]

log = structlog.get_logger("bastion.proxy")
PROXY_CERT_TTL = timedelta(days=365)


class StoreNodeDirectory:
    def __init__(self, nodes: ResourceStore[Node]) -> None:
        self._nodes = nodes

    async def list_nodes(self) -> list[Node]:
        return await self._nodes.list()


class ProxyService:
    def __init__(
        self,
        config: FileConfig,
        auth: AuthService,
        registry: LiveRegistry,
        clock: Clock,
        locks: LockWatcher | None = None,
    ) -> None:
        self.locks = locks
        self.config = config
        self.auth = auth
        self.registry = registry
        self.clock = clock
        self.tunnel = TunnelServer(registry, clock)
        self.listener: ProxyListener | None = None
        self._runner: web.AppRunner | None = None

    async def _tls(self) -> ProxyTLS:
        server = self.auth.server
        key_pem, pub = _new_web_key_pem()
        names, ips = self.config.auth_public_names()
        host, _ = parse_addr(self.config.proxy_service.listen_addr, 3080)
        extra = [parse_addr(a, 3080)[0] for a in self.config.proxy_service.public_addr]
        for name in [host, *extra]:
            (ips if _is_ip(name) else names).append(name)
        names, ips = sorted(set(names)), sorted({i for i in ips if i not in ("0.0.0.0", "::")})
        identity = Identity(
            cluster=server.cluster,
            user="proxy",
            kind="host",
            roles=("proxy",),
            host_id="proxy",
            expires=self.clock.now() + PROXY_CERT_TTL,
        )
        certs = await server.issuer.issue_host(
            identity, pub, ["proxy", *names], names, ips, PROXY_CERT_TTL, "local"
        )
        return ProxyTLS(
            cert_pem=certs.tls_cert,
            key_pem=key_pem.decode(),
            user_ca_pem=certs.tls_user_ca,
            host_ca_pem=certs.tls_host_ca,
        )

    async def start(self) -> tuple[str, int]:
        """Start serving; returns the bound address (useful with port 0)."""
        server = self.auth.server
        limits = self.config.auth_service
        app = build_app(
            server,
            rate=limits.rate_limit.average,
            burst=limits.rate_limit.burst,
            max_body=limits.max_request_bytes,
        )
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        gate = Gate(server)
        ssh = SSHRoute(
            SSHRouteDeps(
                nodes=StoreNodeDirectory(server.nodes),
                roles=StoreRoleSource(server.roles),
                tunnel=self.tunnel,
                audit=server.audit,
                registry=self.registry,
                clock=self.clock,
                cluster=server.cluster,
                locks=self.locks,
                gate=gate,
                pins=NodePins(server.deps.backend),
            )
        )
        cfg = self.config.proxy_service
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
                tls=await self._tls(),
                clock=self.clock,
                audit=server.audit,
                tunnel=self.tunnel,
                ssh=ssh,
                web=self._runner.server,
                gate=gate,
            ),
        )
        await self.listener.start()
        log.info("proxy listening", addr=f"{host}:{self.listener.port}")
        return host, self.listener.port

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        await self.tunnel.close()
        if self._runner is not None:
            await self._runner.cleanup()


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
