"""Run the SSH node service: identity, reverse tunnel, heartbeats, command labels.

Two ways to get there:

* :meth:`NodeService.local` — the all-in-one process: auth issues the node's host identity
  directly, the node reads roles from the backend and audits through the auth log.
* :meth:`NodeService.remote` — a node on another host: joins once with a token through the
  proxy (identity kept in ``<data_dir>/node``), then heartbeats, audits and watches roles over
  the API with its host certificate.

Either way the node dials the proxy (outbound only) and serves the SSH connections the proxy
opens through that tunnel.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog

from bastion.agent.deps import NodeConfig, NodeDeps, RoleSource
from bastion.agent.event_spool import EventSpool
from bastion.agent.heartbeat import (
    CommandLabelRunner,
    command_labels,
    heartbeat_loop,
    node_resource,
)
from bastion.agent.join import HostIdentity
from bastion.agent.recorder import recorder_factory
from bastion.agent.remote import APIEmitter, RemoteAuth, watch_forever
from bastion.agent.renewer import (
    HostRenewer,
    LocalRenewer,
    RenewPolicy,
    remote_renew,
    swap_remote,
)
from bastion.agent.runner import (
    LocalHost,
    follow_local_proxies,
    follow_proxies,
    in_process_bootstrap,
    in_process_connector,
    joined_identity,
    local_host_identity,
    stored_host_id,
)
from bastion.agent.session_join import APITrackers
from bastion.agent.ssh_node import SSHNode
from bastion.agent.ssh_session import ObserverFactory
from bastion.audit.emitter import Emitter
from bastion.auth.recordings import InProcessTarget, RecordingService
from bastion.auth.sessions import InProcessTrackers, SessionTrackerService
from bastion.auth_service import AuthService
from bastion.clock import Clock
from bastion.config.schema import FileConfig
from bastion.errors import BadParameter
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.protocols.addr import parse_addr
from bastion.protocols.sessionjoin import JOIN_STREAM
from bastion.recording.spool import Spool
from bastion.recording.uploader import Uploader, UploadTarget
from bastion.services.cache import ResourceCache, StoreRoleSource
from bastion.tunnel.client import Connector, client_tls_context
from bastion.tunnel.pool import TunnelPool
from bastion.tunnel.session import MuxStream
from bastion.types.inventory import Node

__all__ = ["NodeService"]

log = structlog.get_logger("bastion.node")
HEARTBEAT_INTERVAL = timedelta(seconds=30)
WATCHED_KINDS = ("role", "lock", "cluster_auth_preference", "proxy")
"""What a remote node mirrors: roles (RBAC), locks, the cluster's lock mode, and the proxies it
keeps a tunnel to."""


def _node_name(config: FileConfig) -> str:
    return config.ssh_service.node_name or socket.gethostname() or "node"


class NodeService:
    def __init__(
        self,
        *,
        config: FileConfig,
        node_config: NodeConfig,
        roles: RoleSource,
        audit: Emitter,
        registry: LiveRegistry,
        clock: Clock,
        proxy: tuple[str, int],
        tls: tuple[str, str, str],
        send_heartbeat: Callable[[Node], Awaitable[None]],
        background: list[Callable[[], Coroutine[Any, Any, None]]],
        locks: LockWatcher | None = None,
        connector: Connector | None = None,
        recordings: UploadTarget | None = None,
    ) -> None:
        self.config = config
        self.uploader: Uploader | None = None
        observers: list[ObserverFactory] = []
        if recordings is not None:
            spool = Spool(config.data_path() / "node" / "recording-spool")
            self.uploader = Uploader(spool, recordings)
            observers.append(
                recorder_factory(spool, clock, node_config.cluster, self.uploader.notify)
            )
        self.name = node_config.name
        self.cluster = node_config.cluster
        self.labels = CommandLabelRunner(node_config.cmd_labels, clock=clock)
        self.node = SSHNode(
            NodeDeps(
                config=node_config,
                roles=roles,
                audit=audit,
                registry=registry,
                clock=clock,
                locks=locks,
            ),
            dynamic_labels=self.labels.results,
            observers=observers,
        )
        self._node_config = node_config
        self._send = send_heartbeat
        self._background = background
        cert_pem, key_pem, ca_pem = tls
        self.tunnels = TunnelPool(
            proxy,
            client_tls_context(cert_pem, key_pem, ca_pem),
            self._on_stream,
            connector=connector,
        )
        """A tunnel to each advertised proxy (or to ``proxy`` while none is advertised)."""
        self._direct_addr = ""
        self.renewer: HostRenewer | LocalRenewer[LocalHost] | None = None
        """Renews the node's host certificate (joined, or issued by auth of this process)."""

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    async def local(
        cls,
        config: FileConfig,
        auth: AuthService,
        proxy: Any,
        registry: LiveRegistry,
        clock: Clock,
        locks: LockWatcher | None = None,
    ) -> NodeService:
        """The node of the all-in-one process (``proxy`` is the running ProxyService).

        ``locks`` is the auth process's lock watcher (shared with the proxy)."""
        server = auth.server
        name = _node_name(config)
        node_dir = config.data_path() / "node"
        host_id = stored_host_id(node_dir, name) or str(uuid.uuid4())
        if await server.node_name_taken(name, host_id):
            raise BadParameter(
                f"node name {name!r} is already in use by another host; set "
                "ssh_service.node_name (or --node-name) to another name"
            )

        async def issue() -> LocalHost:
            return await local_host_identity(
                server, node_dir, name, "node", clock, ttl=config.host_certs.ttl,
                principals=[host_id, name, f"{name}.{server.cluster}"], host_id=host_id,
            )  # fmt: skip

        host = await issue()
        identity, certs, key_pem = host.identity, host.certs, host.key_pem
        node_config = NodeConfig(
            name=name,
            cluster=server.cluster,
            host_id=host_id,
            host_key_pem=key_pem.decode(),
            host_cert=certs.ssh_cert,
            user_ca_keys=tuple(certs.ssh_user_ca),
            labels=dict(config.ssh_service.labels),
            cmd_labels=command_labels(config.ssh_service.commands),
            shell=config.ssh_service.shell,
        )
        assert proxy.listener is not None

        async def send(node: Node) -> None:
            await server.heartbeat_node(node, host_id, "local")

        service = cls(
            config=config,
            node_config=node_config,
            roles=StoreRoleSource(server.watched_roles),
            audit=server.audit,
            registry=registry,
            clock=clock,
            proxy=in_process_bootstrap(config, proxy),
            tls=(certs.tls_cert, key_pem.decode(), certs.tls_host_ca),
            send_heartbeat=send,
            connector=in_process_connector(proxy, certs.identity, f"node {name}"),
            background=[],
            locks=locks,
            recordings=(
                InProcessTarget(RecordingService(server))
                if server.deps.recordings is not None
                else None
            ),
        )
        service.node.hub.reporter = InProcessTrackers(SessionTrackerService(server), identity)
        renewer = LocalRenewer(
            host, issue, lambda h: h.certs.tls_cert, RenewPolicy.from_config(config.host_certs),
            clock=clock, on_renewed=[service.use_local_host],
        )  # fmt: skip
        service.renewer = renewer
        service._background.append(renewer.run)
        service._background.append(follow_local_proxies(service.tunnels, server))
        return service

    @classmethod
    async def remote(cls, config: FileConfig, registry: LiveRegistry, clock: Clock) -> NodeService:
        """A node on another host: join once, then talk to auth through the proxy."""
        svc = config.ssh_service
        name = _node_name(config)
        node_dir = config.data_path() / "node"
        ident = await joined_identity(
            config, node_dir, name=name, role="node", section="ssh_service",
            proxy_server=svc.proxy_server, join_token=svc.join_token, ca_pin=svc.ca_pin,
        )  # fmt: skip
        server = svc.proxy_server or ident.server
        remote = RemoteAuth(ident, server)
        renewer = HostRenewer(
            ident,
            remote_renew(remote),
            RenewPolicy.from_config(config.host_certs),
            clock=clock,
            on_renewed=[swap_remote(remote)],
        )
        cache = ResourceCache()
        spool = EventSpool(node_dir / "event-spool", svc.event_spool_max_bytes)
        emitter = APIEmitter(remote, spool)
        node_config = NodeConfig(
            name=ident.host_name,
            cluster=ident.cluster,
            host_id=ident.host_id,
            host_key_pem=ident.read("key"),
            host_cert=ident.read("cert.pub").strip(),
            user_ca_keys=tuple(k for k in ident.read("user_ca.pub").splitlines() if k.strip()),
            labels=dict(svc.labels),
            cmd_labels=command_labels(config.ssh_service.commands),
            shell=config.ssh_service.shell,
        )
        locks = LockWatcher(clock=clock, audit=emitter, registry=registry, roles=cache.get_roles)
        locks.follow_cache(cache)
        node = cls(
            config=config,
            node_config=node_config,
            roles=cache,
            audit=emitter,
            registry=registry,
            clock=clock,
            proxy=parse_addr(server, 3080),
            tls=(ident.read("tls.crt"), ident.read("tls.key"), ident.read("ca.pem")),
            send_heartbeat=remote.heartbeat,
            background=[
                lambda: watch_forever(remote, WATCHED_KINDS, cache),
                emitter.run,
                locks.watch_staleness,
                renewer.run,
            ],
            locks=locks,
            recordings=remote,
        )
        renewer.on_renewed.append(node.use_host_identity)
        node.renewer = renewer
        node.node.hub.reporter = APITrackers(remote)
        follow_proxies(node.tunnels, cache)
        return node

    def use_host_identity(self, ident: HostIdentity) -> None:
        """A renewed host identity: the tunnels' next connections and new SSH connections use
        it (connections already up keep theirs)."""
        self.tunnels.set_ssl_context(
            client_tls_context(ident.read("tls.crt"), ident.read("tls.key"), ident.read("ca.pem"))
        )
        self.node.replace_host_key(
            ident.read("key"),
            ident.read("cert.pub").strip(),
            [k for k in ident.read("user_ca.pub").splitlines() if k.strip()],
        )

    def use_local_host(self, host: LocalHost) -> None:
        """The all-in-one's reissued host identity (as :meth:`use_host_identity`)."""
        cert, key, ca = host.tls
        self.tunnels.set_ssl_context(client_tls_context(cert, key, ca))
        self.node.replace_host_key(key, host.certs.ssh_cert, list(host.certs.ssh_user_ca))

    # ---- running -----------------------------------------------------------------------------

    async def _on_stream(self, stream: MuxStream, header: dict[str, Any]) -> None:
        if header.get("type") == JOIN_STREAM:
            await self.node.hub.accept_join(stream, header)
            return
        if header.get("type") != "ssh":
            log.warning("unknown stream type from proxy", header_type=header.get("type"))
            stream.close()
            return
        host, _, port = str(header.get("client_addr", "")).rpartition(":")
        await self.node.accept(stream, (host.strip("[]"), int(port) if port.isdigit() else 0))

    def _build_node(self) -> Node:
        return node_resource(self._node_config, self.labels.labels(), self._direct_addr, True)

    async def run(self) -> None:
        """Serve until cancelled."""
        if self.uploader is not None:
            self.uploader.recover()  # before the node accepts sessions
        await self.node.start()
        listen = self.config.ssh_service.listen_addr
        if listen:
            host, port = parse_addr(listen, 3022)
            bound = await self.node.listen(host, port)
            self._direct_addr = f"{host}:{bound}"
        async with asyncio.TaskGroup() as group:
            group.create_task(self.tunnels.run(), name="node-tunnels")
            group.create_task(self.labels.run(), name="node-command-labels")
            group.create_task(
                heartbeat_loop(self._send, self._build_node, HEARTBEAT_INTERVAL),
                name="node-heartbeat",
            )
            for factory in self._background:
                group.create_task(factory(), name="node-background")
            if self.uploader is not None:
                group.create_task(self.uploader.run(), name="node-recording-upload")

    async def close(self) -> None:
        await self.tunnels.close()
        await self.node.close()
