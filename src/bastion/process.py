"""The daemon's supervisor: start the enabled services, wait for a signal, shut down cleanly.

All-in-one (the default): auth, then the proxy (which serves the auth API on its port too), then
an SSH node for this host that dials the proxy through a reverse tunnel. With
``auth_service.enabled: false`` and ``proxy_service.enabled: false`` the process is a remote
node that joins through ``ssh_service.proxy_server``. With only ``proxy_service`` enabled (and
``proxy_service.auth_server``) it is a proxy in its own process (:func:`standalone_proxy`):
several of them behind a load balancer, and several auth servers on one PostgreSQL, are the
high-availability deployment (docs/ha.md). With ``db_service.enabled`` (``--roles=db``) it
also runs a database agent (:mod:`bastion.agent.db_runner`): in process next to auth and the
proxy, or on its own, joined with a ``db`` token (docs/database-access.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from bastion import __version__
from bastion.agent.app_runner import AppService
from bastion.agent.db_runner import DbService
from bastion.agent.event_spool import EventSpool
from bastion.agent.join import HostIdentity, join_cluster, load_host_identity
from bastion.agent.remote import APIEmitter, RemoteAuth, watch_forever
from bastion.agent.renewer import HostRenewer, RenewPolicy, remote_renew, swap_remote
from bastion.agent.service import NodeService
from bastion.auth.device_sync import DeviceSync
from bastion.auth.devices import cached_device_trust
from bastion.auth.gate import Gate
from bastion.auth.risk import RiskEvaluator
from bastion.auth_service import AuthService
from bastion.clock import Clock, SystemClock
from bastion.config.apps import app_cert_names, app_domain
from bastion.config.schema import FileConfig
from bastion.contract.agents import HEARTBEAT_PROXY, PIN_NODE, Pin
from bastion.contract.base import ResourceDoc
from bastion.contract.devices import DEVICE_FOR_GATE, DeviceLookup
from bastion.contract.resources import GET_RESOURCE
from bastion.errors import BadParameter, BastionError, ConnectionProblem, NotFound
from bastion.export.build import build_forwarders, run_forwarders
from bastion.export.forwarder import Forwarder
from bastion.live.registry import LiveRegistry
from bastion.locks.matcher import LockDecision, LockTargets
from bastion.locks.watcher import LockWatcher
from bastion.proxy.app_remote import RemoteApps
from bastion.proxy.cluster_route import CacheTrust
from bastion.proxy.db_route import CacheDatabases
from bastion.proxy.listener import ProxyTLS, WebUpstream
from bastion.proxy.service import ALL_IN_ONE_PROXY, ProxyLink, ProxyService, public_names
from bastion.runtime import freeze_startup_heap
from bastion.services.cache import ResourceCache, StoreRoleSource
from bastion.sso.revalidate import Revalidator
from bastion.types.access import User
from bastion.types.devices import Device
from bastion.types.identity import Identity
from bastion.types.inventory import Node, ProxyServer, ProxyServerSpec
from bastion.types.meta import Metadata

__all__ = [
    "Ready",
    "advertise_proxy",
    "proxy_record_name",
    "run",
    "standalone_proxy",
]

log = structlog.get_logger("bastion.process")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(slots=True)
class Ready:
    """What is running, for the start-up message."""

    cluster: str
    data_dir: Path
    ca_pin: str = ""
    auth_addr: tuple[str, int] | None = None
    proxy_addr: tuple[str, int] | None = None
    node_name: str = ""
    created: list[str] = field(default_factory=list)
    second_factor: str = ""


async def run(config: FileConfig, on_ready: Callable[[Ready], None]) -> None:
    """Run until SIGINT/SIGTERM. ``on_ready`` is called once every service is listening."""
    if not (
        config.auth_service.enabled
        or config.ssh_service.enabled
        or config.proxy_service.enabled
        or config.db_service.enabled
        or config.app_service.enabled
    ):
        raise BadParameter(
            "nothing to run: enable auth_service, proxy_service, ssh_service, db_service "
            "or app_service"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    clock = SystemClock()
    registry = LiveRegistry()
    ready = Ready(cluster=config.resolved_cluster_name(), data_dir=config.data_path())
    async with contextlib.AsyncExitStack() as stack:
        auth: AuthService | None = None
        proxy: ProxyService | None = None
        if config.auth_service.enabled:
            auth = await AuthService.open(config, clock)
            stack.push_async_callback(auth.close)
            ready.created = await auth.start()
            ready.auth_addr, ready.ca_pin = auth.addr, auth.ca_pin
            ready.cluster = auth.server.cluster
            ready.second_factor = (await auth.server.auth_preference()).spec.second_factor
        locks: LockWatcher | None = None
        if auth is not None:
            locks = LockWatcher(
                clock=clock,
                audit=auth.server.audit,
                registry=registry,
                roles=StoreRoleSource(auth.server.watched_roles).get_roles,
            )
            stack.push_async_callback(locks.close)
            await locks.load(auth.server.deps.backend)
            auth.server.use_lock_view(locks)  # the gate and logins decide from it
        background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        if config.proxy_service.enabled:
            if auth is not None:
                link = await ProxyLink.in_process(config, auth, clock, locks)
            else:
                link, background, remote = await standalone_proxy(config, registry, clock)
                ready.cluster = link.cluster
            proxy = ProxyService(config, link, registry, clock)
            stack.push_async_callback(proxy.close)
            ready.proxy_addr = await proxy.start()
            assert proxy.listener is not None
            send: Callable[[ProxyServer], Awaitable[object]]
            if auth is None:
                send = partial(_send_heartbeat, remote)
                host_id = remote.identity.host_id
            else:  # one process: node liveness from the tunnels too; heartbeat to auth itself
                send = partial(auth.server.heartbeat_proxy, host_id=ALL_IN_ONE_PROXY)
                host_id = ALL_IN_ONE_PROXY
                own = proxy_record_name(host_id, config.proxy_advertised_addr(proxy.listener.port))
                auth.server.use_tunnel_presence(proxy.tunnel.is_online, own)
            background.append(partial(advertise_proxy, config, send, host_id, proxy, clock))
        node: NodeService | None = None
        if config.ssh_service.enabled:
            if auth is not None and proxy is not None:
                node = await NodeService.local(config, auth, proxy, registry, clock, locks)
            else:
                node = await NodeService.remote(config, registry, clock)
            stack.push_async_callback(node.close)
            ready.node_name = node.name
            ready.cluster = ready.cluster if auth is not None else node.cluster
        db_agent: DbService | None = None
        if config.db_service.enabled:
            if auth is not None and proxy is not None:
                db_agent = await DbService.local(config, auth, proxy, clock)
            else:
                db_agent = await DbService.remote(config, clock)
            stack.push_async_callback(db_agent.close)
            ready.cluster = ready.cluster if auth is not None else db_agent.cluster
        app_agent: AppService | None = None
        if config.app_service.enabled:  # docs/app-access.md
            if auth is not None and proxy is not None:
                app_agent = await AppService.local(config, auth, proxy, clock)
            else:
                app_agent = await AppService.remote(config, clock)
            stack.push_async_callback(app_agent.close)
            ready.cluster = ready.cluster if auth is not None else app_agent.cluster
        exporters: list[Forwarder] = []
        if auth is not None and config.audit_export is not None:
            exporters = build_forwarders(config.audit_export, auth.server.audit, config.data_path())
        on_ready(ready)
        freeze_startup_heap()
        async with asyncio.TaskGroup() as group:
            tasks = []
            if auth is not None:
                tasks.append(
                    group.create_task(
                        auth.refresh_admin_identity_forever(), name="admin-identity-refresh"
                    )
                )
            if auth is not None:
                checkpointer = await auth.server.audit_checkpointer()
                interval = config.auth_service.audit.checkpoint_interval
                tasks.append(
                    group.create_task(checkpointer.run_forever(interval), name="audit-checkpoints")
                )
            if auth is not None and locks is not None:
                backend = auth.server.deps.backend
                tasks.append(group.create_task(locks.run_backend(backend), name="lock-watch"))
                tasks.append(group.create_task(locks.watch_staleness(), name="lock-staleness"))
                sync = DeviceSync(auth.server).run_forever()  # device_trust.sources
                tasks.append(group.create_task(sync, name="device-sync"))
            if node is not None:
                tasks.append(group.create_task(node.run(), name="ssh-node"))
            if db_agent is not None:
                tasks.append(group.create_task(db_agent.run(), name="db-agent"))
            if app_agent is not None:
                tasks.append(group.create_task(app_agent.run(), name="app-agent"))
            for factory in background:
                tasks.append(group.create_task(factory(), name="proxy-background"))
            if exporters:
                tasks.append(group.create_task(run_forwarders(exporters), name="audit-export"))
            if auth is not None and config.risk.enabled:
                risk = RiskEvaluator.for_auth(config.risk, auth.server)
                tasks.append(group.create_task(risk.run_forever(), name="risk-signals"))
            if auth is not None:  # OIDC logins re-checked at the IdP (docs/scim.md)
                revalidator = Revalidator(auth.server).run_forever()
                tasks.append(group.create_task(revalidator, name="sso-revalidate"))
            await stop.wait()
            log.info("shutting down")
            if auth is not None:  # sign (and witness) the events of the last interval too
                with contextlib.suppress(BastionError, TimeoutError):
                    cp = await auth.server.audit_checkpointer()
                    await asyncio.wait_for(cp.checkpoint(), 5)
            for task in tasks:
                task.cancel()


PROXY_WATCHED_KINDS = (
    *("role", "lock", "cluster_auth_preference", "node", "db", "user"),
    *("remote_cluster", "proxy", "cert_authority"),
)
"""What a proxy in its own process mirrors: RBAC and locks, the node and database directories,
the users the authentication gate checks (existence and epoch), and the leaf clusters' public
CAs, the root's proxies and this cluster's public CAs (pushed to the leaves) for leaf tunnels
(:class:`~bastion.proxy.cluster_route.CacheTrust`)."""
PROXY_HEARTBEAT = timedelta(seconds=10)


class _CacheUsers:
    """The gate's user lookup from the watch-fed cache (fails closed before the first sync)."""

    def __init__(self, cache: ResourceCache) -> None:
        self._cache = cache

    async def get(self, name: str) -> User:
        if not self._cache.state.synced and not self._cache.state.resources:
            raise ConnectionProblem("users are not known yet: the proxy has not synced with auth")
        for user in self._cache.items("user"):
            if isinstance(user, User) and user.name == name:
                return user
        raise NotFound(f"user {name!r} not found")


class _APIUsers:
    """The authoritative user lookup (auth's API) the gate asks before refusing on the cache's
    word: a user created or reset a moment ago may not be in the cache yet."""

    def __init__(self, remote: RemoteAuth) -> None:
        self._remote = remote

    async def get(self, name: str) -> User:
        found = (await self._remote.send(GET_RESOURCE, path={"kind": "user", "name": name})).root
        if not isinstance(found, User):
            raise NotFound(f"user {name!r} not found")
        return found


async def _gate_device(remote: RemoteAuth, device_id: str) -> Device | None:
    """A device record for the gate's device-trust check (asked only under ``required``)."""
    return (await remote.send(DEVICE_FOR_GATE, DeviceLookup(device_id=device_id))).device


class _CacheNodes:
    def __init__(self, cache: ResourceCache) -> None:
        self._cache = cache

    async def list_nodes(self) -> list[Node]:
        if not self._cache.state.synced and not self._cache.state.resources:
            raise ConnectionProblem("nodes are not known yet: the proxy has not synced with auth")
        return [n for n in self._cache.items("node") if isinstance(n, Node)]


class _WatcherLocks:
    def __init__(self, locks: LockWatcher) -> None:
        self._locks = locks

    async def lock_access(self, identity: Identity, targets: LockTargets) -> LockDecision:
        return await self._locks.check_access(identity, targets)


class _APIPins:
    """Node pins through auth's API; a confirmed (name, host id) is remembered for a minute, so
    a busy proxy does not ask auth on every connection (a changed host id always asks)."""

    TTL = 60.0

    def __init__(self, remote: RemoteAuth) -> None:
        self._remote = remote
        self._confirmed: dict[tuple[str, str], float] = {}

    async def pin(self, name: str, host_id: str) -> str:
        now = asyncio.get_running_loop().time()
        if self._confirmed.get((name, host_id), 0.0) > now:
            return host_id
        answer = await self._remote.send(PIN_NODE, Pin(name=name, host_id=host_id))
        pinned = answer.host_id
        if pinned == host_id:
            if len(self._confirmed) > 10_000:
                self._confirmed.clear()
            self._confirmed[(name, host_id)] = now + self.TTL
        return pinned


async def standalone_proxy(
    config: FileConfig, registry: LiveRegistry, clock: Clock
) -> tuple[ProxyLink, list[Callable[[], Coroutine[Any, Any, None]]], RemoteAuth]:
    """A proxy in its own process: join once with a ``proxy`` token (identity kept in
    ``<data_dir>/proxy``), then talk to auth only through its API.

    Returns:
        The link, the background tasks to run (watch, event delivery, lock staleness) and
        the API client (for the heartbeats).
    """
    cfg = config.proxy_service
    auths = [f"{h}:{p}" for h, p in cfg.auth_servers()]
    if not auths:
        raise BadParameter(
            "a proxy without auth_service in its process needs the auth server: "
            "proxy_service.auth_server (or --auth=HOST:3025)"
        )
    proxy_dir = config.data_path() / "proxy"
    try:
        ident = load_host_identity(proxy_dir)
    except NotFound:
        if not (cfg.join_token and cfg.ca_pin):
            raise BadParameter(
                "this proxy has not joined yet: set proxy_service.join_token (bctl tokens add "
                "--type=proxy) and proxy_service.ca_pin (the sha256:... pin bastion start "
                "printed)"
            ) from None
        names, ips = public_names(config)
        names += app_cert_names(app_domain(cfg.public_addr, cfg.listen_addr), [])  # apps
        ident = await join_cluster(
            auths[0],
            cfg.join_token,
            cfg.ca_pin,
            False,
            socket.gethostname() or "proxy",
            "proxy",
            proxy_dir,
            dns_names=names,
            ip_addresses=ips,
            ttl=config.host_certs.ttl,
        )
    if ident.role != "proxy":
        raise BadParameter(f"{proxy_dir} holds a {ident.role} identity, not a proxy's")
    remote = RemoteAuth(ident, auths[0], auths[1:])
    cache = ResourceCache()
    spool = EventSpool(proxy_dir / "event-spool", config.ssh_service.event_spool_max_bytes)
    emitter = APIEmitter(remote, spool)
    locks = LockWatcher(clock=clock, audit=emitter, registry=registry, roles=cache.get_roles)
    locks.follow_cache(cache)
    link = ProxyLink(
        cluster=ident.cluster,
        tls=_proxy_tls(ident),
        nodes=_CacheNodes(cache),
        roles=cache,
        audit=emitter,
        gate=Gate(
            _CacheUsers(cache),
            _WatcherLocks(locks),
            emitter,
            recheck=_APIUsers(remote),
            devices=cached_device_trust(cache, partial(_gate_device, remote)),
        ),
        pins=_APIPins(remote),
        locks=locks,
        web_upstream=WebUpstream(tuple(cfg.auth_servers())),
        on_close=[locks.close],
        databases=CacheDatabases(cache, clock),
        apps=RemoteApps(remote),  # app hosts: sessions, RBAC and JWTs asked of auth
        recordings=remote,  # database session recordings, uploaded as a remote node's are
        # leaf tunnels and routes to leaves; their status and CAs written through auth's API
        trust=CacheTrust(cache, ident.cluster, remote.send),  # (docs/trusted-clusters.md)
    )
    # Renew the proxy's host certificate before it expires (host_certs); each renewal swaps
    # the API client's context and the listener's TLS contexts (new handshakes).
    renewer = HostRenewer(
        ident, remote_renew(remote), RenewPolicy.from_config(config.host_certs), clock=clock,
        on_renewed=[swap_remote(remote), lambda i: link.renewed(_proxy_tls(i))],
    )  # fmt: skip
    background: list[Callable[[], Coroutine[Any, Any, None]]] = [
        partial(watch_forever, remote, PROXY_WATCHED_KINDS, cache),
        emitter.run,
        locks.watch_staleness,
        renewer.run,
    ]
    return link, background, remote


async def _send_heartbeat(remote: RemoteAuth, record: ProxyServer) -> None:
    await remote.send(HEARTBEAT_PROXY, ResourceDoc(record))


def _proxy_tls(ident: HostIdentity) -> ProxyTLS:
    return ProxyTLS(
        cert_pem=ident.read("tls.crt"),
        key_pem=ident.read("tls.key"),
        user_ca_pem=ident.read("user_ca.pem"),
        host_ca_pem=ident.read("ca.pem"),
    )


def proxy_record_name(host_id: str, addr: str) -> str:
    """The ``proxy`` resource a proxy heartbeats: a proxy in its own process is named by its
    host id; the all-in-ones (all host id "proxy", one per auth server in HA) by their address,
    so that they do not overwrite each other."""
    if host_id != ALL_IN_ONE_PROXY:
        return host_id
    return "proxy-" + _NOT_IN_NAME.sub("-", addr)


async def advertise_proxy(
    config: FileConfig,
    send: Callable[[ProxyServer], Awaitable[object]],
    host_id: str,
    proxy: ProxyService,
    clock: Clock,
) -> None:
    """Heartbeat this proxy's public address through ``send`` (agents keep a tunnel to each
    proxy; a proxy in its own process sends over the API, the all-in-one straight to its auth
    server); never returns."""
    assert proxy.listener is not None
    addr = config.proxy_advertised_addr(proxy.listener.port)
    name = proxy_record_name(host_id, addr)
    while True:
        record = ProxyServer(
            metadata=Metadata(name=name, expires=clock.now() + 3 * PROXY_HEARTBEAT),
            spec=ProxyServerSpec(public_addr=addr, host_id=host_id, version=__version__),
        )
        try:
            await send(record)
        except BastionError as exc:
            log.warning("proxy heartbeat failed; retrying", error=exc.message)
        await asyncio.sleep(PROXY_HEARTBEAT.total_seconds())
