"""The daemon's supervisor: start the enabled services, wait for a signal, shut down cleanly.

All-in-one (the default): auth, then the proxy (which serves the auth API on its port too), then
an SSH node for this host that dials the proxy through a reverse tunnel. With
``auth_service.enabled: false`` and ``proxy_service.enabled: false`` the process is a remote
node that joins through ``ssh_service.proxy_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bastion.agent.service import NodeService
from bastion.auth_service import AuthService
from bastion.clock import SystemClock
from bastion.config.schema import FileConfig
from bastion.errors import BadParameter, BastionError
from bastion.export.build import build_forwarders, run_forwarders
from bastion.export.forwarder import Forwarder
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.proxy.service import ProxyService
from bastion.services.cache import StoreRoleSource

__all__ = ["Ready", "run"]

log = structlog.get_logger("bastion.process")


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
    if not (config.auth_service.enabled or config.ssh_service.enabled):
        raise BadParameter("nothing to run: enable auth_service or ssh_service")
    if config.proxy_service.enabled and not config.auth_service.enabled:
        raise BadParameter(
            "proxy_service needs auth_service in the same process in this release; "
            "disable the proxy on remote nodes (proxy_service.enabled: false)"
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
                roles=StoreRoleSource(auth.server.roles).get_roles,
            )
            stack.push_async_callback(locks.close)
            await locks.load(auth.server.deps.backend)
            auth.server.use_lock_view(locks)  # the gate and logins decide from it
        if auth is not None and config.proxy_service.enabled:
            proxy = ProxyService(config, auth, registry, clock, locks)
            stack.push_async_callback(proxy.close)
            ready.proxy_addr = await proxy.start()
        node: NodeService | None = None
        if config.ssh_service.enabled:
            if auth is not None and proxy is not None:
                node = await NodeService.local(config, auth, proxy, registry, clock, locks)
            else:
                node = await NodeService.remote(config, registry, clock)
            stack.push_async_callback(node.close)
            ready.node_name = node.name
            ready.cluster = ready.cluster if auth is not None else node.cluster
        exporters: list[Forwarder] = []
        if auth is not None and config.audit_export is not None:
            exporters = build_forwarders(config.audit_export, auth.server.audit, config.data_path())
        on_ready(ready)
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
            if node is not None:
                tasks.append(group.create_task(node.run(), name="ssh-node"))
            if exporters:
                tasks.append(group.create_task(run_forwarders(exporters), name="audit-export"))
            await stop.wait()
            log.info("shutting down")
            if auth is not None:  # sign (and witness) the events of the last interval too
                with contextlib.suppress(BastionError, TimeoutError):
                    cp = await auth.server.audit_checkpointer()
                    await asyncio.wait_for(cp.checkpoint(), 5)
            for task in tasks:
                task.cancel()
