"""Run the app agent (``app_service``): identity, reverse tunnels, app heartbeats, streams.

Layer: ``agent``. The agent serves apps on networks the proxy cannot reach: the proxy opens a
stream through this agent's reverse tunnel with header ``{"type": "app", "app": NAME, ...}``
(:mod:`bastion.proxy.app_route`) and the agent connects to the app's internal URI and relays
bytes (HTTP requests the proxy has already authorized and rewritten, or a TCP app's bytes).
For ``https://`` apps the agent speaks TLS to the app, verifying its certificate unless the
app sets ``insecure_skip_verify``. Two ways to run, as for the database agent:

* :meth:`AppService.local`: the all-in-one process (``bastion start`` with ``app_service``
  enabled): auth issues the host identity, heartbeats go to the auth server, the tunnel to
  this process's proxy is handed over in memory.
* :meth:`AppService.remote`: an agent on another host (``bastion start --roles=app``): joins
  once with an ``app`` token through ``app_service.proxy_server`` (identity kept in
  ``<data_dir>/app``), heartbeats with ``POST /v1/apps/heartbeat`` and keeps a tunnel to every
  proxy that auth advertises.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog

from bastion.agent.pump import pump_pair
from bastion.agent.remote import RemoteAuth, watch_forever
from bastion.agent.runner import (
    follow_local_proxies,
    follow_proxies,
    heartbeat_round,
    host_renewer,
    in_process_bootstrap,
    in_process_connector,
    joined_identity,
    local_host_identity,
)
from bastion.auth.apps import AppAccess
from bastion.auth_service import AuthService
from bastion.clock import Clock
from bastion.config.schema import FileConfig
from bastion.contract.apps import APP_HEARTBEAT
from bastion.contract.base import ResourceDoc
from bastion.errors import BastionError, NotFound
from bastion.protocols.addr import parse_addr
from bastion.services.cache import ResourceCache
from bastion.tunnel.client import Connector, client_tls_context
from bastion.tunnel.pool import TunnelPool
from bastion.types.apps import App

__all__ = ["APP_HEARTBEAT_INTERVAL", "AppService", "apps_from_config"]

log = structlog.get_logger("bastion.app_agent")
APP_HEARTBEAT_INTERVAL = timedelta(seconds=20)
CONNECT_TIMEOUT = 10.0

SendHeartbeat = Callable[[App], Awaitable[None]]


def apps_from_config(config: FileConfig, host_id: str) -> list[App]:
    """The ``app`` resources of ``app_service.apps``, bound to ``host_id``."""
    return [a.resource(host_id) for a in config.app_service.apps]


def _agent_name(config: FileConfig) -> str:
    return config.app_service.agent_name or socket.gethostname() or "app-agent"


class AppService:
    def __init__(
        self,
        *,
        name: str,
        cluster: str,
        apps: list[App],
        clock: Clock,
        proxy: tuple[str, int],
        tls: tuple[str, str, str],
        send_heartbeat: SendHeartbeat,
        background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.apps = apps
        self.clock = clock
        self._send = send_heartbeat
        self._background = background or []
        self._verify = ssl.create_default_context()
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE
        cert_pem, key_pem, ca_pem = tls
        self.tunnels = TunnelPool(
            proxy,
            client_tls_context(cert_pem, key_pem, ca_pem),
            self._on_stream,
            connector=connector,
        )

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    async def local(
        cls, config: FileConfig, auth: AuthService, proxy: Any, clock: Clock
    ) -> AppService:
        """The agent of the all-in-one process (``proxy`` is the running ProxyService)."""
        server = auth.server
        name = _agent_name(config)
        host = await local_host_identity(server, config.data_path() / "app", name, "app", clock)
        identity = host.identity
        access = AppAccess(server)

        async def send(app: App) -> None:
            await access.heartbeat(app, identity, "local")

        assert proxy.listener is not None
        service = cls(
            name=name,
            cluster=server.cluster,
            apps=apps_from_config(config, identity.host_id),
            clock=clock,
            proxy=in_process_bootstrap(config, proxy),
            tls=host.tls,
            send_heartbeat=send,
            connector=in_process_connector(proxy, host.certs.identity, f"app agent {name}"),
        )
        service._background.append(follow_local_proxies(service.tunnels, server))
        return service

    @classmethod
    async def remote(cls, config: FileConfig, clock: Clock) -> AppService:
        """An agent on another host: join once with an ``app`` token, then talk to auth
        through the proxy."""
        svc = config.app_service
        ident = await joined_identity(
            config, config.data_path() / "app", name=_agent_name(config), role="app",
            section="app_service", proxy_server=svc.proxy_server, join_token=svc.join_token,
            ca_pin=svc.ca_pin,
        )  # fmt: skip
        server = svc.proxy_server or ident.server
        remote = RemoteAuth(ident, server)

        async def send(app: App) -> None:
            await remote.send(APP_HEARTBEAT, ResourceDoc(app))

        cache = ResourceCache()
        background: list[Callable[[], Coroutine[Any, Any, None]]] = [
            lambda: watch_forever(remote, ("proxy",), cache)
        ]
        agent = cls(
            name=ident.host_name,
            cluster=ident.cluster,
            apps=apps_from_config(config, ident.host_id),
            clock=clock,
            proxy=parse_addr(server, 3080),
            tls=(ident.read("tls.crt"), ident.read("tls.key"), ident.read("ca.pem")),
            send_heartbeat=send,
            background=background,
        )
        background.append(host_renewer(config, ident, remote, agent.tunnels, clock).run)
        follow_proxies(agent.tunnels, cache)
        return agent

    def app(self, name: str) -> App:
        for app in self.apps:
            if app.metadata.name == name:
                return app
        raise NotFound(f'app "{name}" is not served by this agent')

    async def _on_stream(self, stream: Any, header: dict[str, Any]) -> None:
        if header.get("type") != "app":
            log.warning("unknown stream type from proxy", header_type=header.get("type"))
            stream.close()
            return
        await self.on_stream(stream, header)

    async def on_stream(self, stream: asyncio.Transport, header: dict[str, Any]) -> None:
        """Serve one ``type: app`` stream: connect to the app, relay until either end closes."""
        loop = asyncio.get_running_loop()
        name = str(header.get("app", ""))
        done: asyncio.Future[None] = loop.create_future()
        a, b = pump_pair(done)
        try:
            app = self.app(name)
            parts = urlsplit(app.spec.uri)
            if not parts.hostname:
                raise NotFound(f'app "{name}" has no host in its uri')
            tls: ssl.SSLContext | None = None
            port = parts.port
            if parts.scheme == "https":
                tls = self._insecure if app.spec.insecure_skip_verify else self._verify
                port = port or 443
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.create_connection(
                    lambda: b,
                    parts.hostname,
                    port or 80,
                    ssl=tls,
                    server_hostname=parts.hostname if tls is not None else None,
                )
        except (BastionError, OSError, TimeoutError, ssl.SSLError) as exc:
            why = exc.message if isinstance(exc, BastionError) else str(exc) or "timed out"
            log.warning("app agent: cannot reach app", app=name, error=why)
            stream.close()
            return
        stream.set_protocol(a)
        a.connection_made(stream)
        assert b.transport is not None
        for chunk in a.pending:
            b.transport.write(chunk)
        a.pending.clear()
        if stream.is_reading():  # held bytes are delivered by resume_reading
            stream.pause_reading()
        stream.resume_reading()
        await done

    # ---- running -----------------------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        """Announce every app (each expires after three missed intervals)."""
        await heartbeat_round(self.apps, self._send, APP_HEARTBEAT_INTERVAL, self.clock, "app")

    async def _heartbeats(self) -> None:
        while True:
            await self.heartbeat_once()
            await asyncio.sleep(APP_HEARTBEAT_INTERVAL.total_seconds())

    async def run(self) -> None:
        """Serve until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.tunnels.run(), name="app-tunnels")
            group.create_task(self._heartbeats(), name="app-heartbeat")
            for factory in self._background:
                group.create_task(factory(), name="app-background")

    async def close(self) -> None:
        await self.tunnels.close()
