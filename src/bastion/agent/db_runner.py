"""Run the database agent (``db_service``): identity, reverse tunnels, database heartbeats.

Layer: ``agent``. The protocol work is :class:`bastion.agent.db_service.DbAgent`; this module
gives it a host identity with the ``db`` role and runs it, two ways:

* :meth:`DbService.local` — the all-in-one process (``bastion start`` with ``db_service``
  enabled): auth issues the agent's host identity directly, client certificates and
  heartbeats go straight to the auth server, and the tunnel to the proxy of this process is
  handed over in memory.
* :meth:`DbService.remote` — an agent on another host (``bastion start --roles=db``): joins
  once with a ``db`` token through ``db_service.proxy_server`` (identity kept in
  ``<data_dir>/db``), then gets client certificates (``POST /v1/db/agent-certs``) and
  heartbeats (``POST /v1/db/heartbeat``) over the API, and keeps a tunnel to every proxy that
  auth advertises.

Every configured database is heartbeated as a ``db`` resource bound to this agent's host id
(``bctl get db``, ``bsh db ls``); the proxy routes by those records. A database's ``commands``
(dynamic labels) run here on their periods; each heartbeat carries their latest results.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from bastion.agent.db_provision import DbAdmin
from bastion.agent.db_service import DbAgent, DbAgentDeps, DbClientCert, DbClientCerts
from bastion.agent.heartbeat import CommandLabelRunner, CommandRunner, command_labels, run_command
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
from bastion.audit.emitter import Emitter
from bastion.auth.databases import DatabaseInventory
from bastion.auth.db_certs import DbCerts
from bastion.auth_service import AuthService, _new_key_pem
from bastion.clock import Clock
from bastion.config.schema import DatabaseConfig, FileConfig
from bastion.contract.agents import SUBMIT_EVENTS, EventBatch
from bastion.contract.base import ResourceDoc
from bastion.contract.db import DB_AGENT_CERT, DB_HEARTBEAT, DbAgentCertRequest
from bastion.errors import BadParameter
from bastion.protocols.addr import parse_addr
from bastion.services.cache import ResourceCache
from bastion.tunnel.client import Connector, client_tls_context
from bastion.tunnel.pool import TunnelPool
from bastion.types.database import Database, DatabaseSpec, DatabaseTLS
from bastion.types.meta import Metadata

__all__ = ["DB_HEARTBEAT_INTERVAL", "DbService", "admins_from_config", "databases_from_config"]

log = structlog.get_logger("bastion.db_agent")
DB_HEARTBEAT_INTERVAL = timedelta(seconds=20)

SendHeartbeat = Callable[[Database], Awaitable[None]]


def databases_from_config(config: FileConfig, host_id: str) -> list[Database]:
    """The ``db`` resources of ``db_service.databases`` (CA files read now).

    Raises:
        BadParameter: an unreadable ``tls.ca_file``.
    """
    return [_database(d, host_id) for d in config.db_service.databases]


def _database(cfg: DatabaseConfig, host_id: str) -> Database:
    ca_pem = ""
    if cfg.tls.ca_file:
        try:
            ca_pem = Path(cfg.tls.ca_file).expanduser().read_text()
        except OSError as exc:
            raise BadParameter(
                f"db_service.databases[{cfg.name}].tls.ca_file: cannot read "
                f"{cfg.tls.ca_file}: {exc.strerror}"
            ) from None
    if cfg.tls.mode == "insecure-plaintext":
        log.warning("database configured WITHOUT TLS (insecure-plaintext)", database=cfg.name)
    return Database(
        metadata=Metadata(name=cfg.name, labels=dict(cfg.labels), description=cfg.description),
        spec=DatabaseSpec(
            protocol=cfg.protocol,
            uri=cfg.uri,
            tls=DatabaseTLS(mode=cfg.tls.mode, ca_pem=ca_pem, server_name=cfg.tls.server_name),
            host_id=host_id,
            dynamic_labels=command_labels(cfg.commands),
        ),
    )


def admins_from_config(config: FileConfig) -> dict[str, DbAdmin]:
    """``{database: DbAdmin}`` of the databases with an ``admin_user`` (``create_db_user``)."""
    return {
        d.name: DbAdmin(d.admin_user, d.admin_database)
        for d in config.db_service.databases
        if d.admin_user
    }


class _SubmitAudit:
    """A remote agent's ``db.user.*`` events, sent to auth at once (``/v1/events/submit``)."""

    def __init__(self, remote: RemoteAuth) -> None:
        self._remote = remote

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> None:
        event = {"type": event_type, "outcome": outcome, "event_id": secrets.token_hex(16)}
        await self._remote.send(SUBMIT_EVENTS, EventBatch(events=[{**fields, **event}]))


def _agent_name(config: FileConfig) -> str:
    return config.db_service.agent_name or socket.gethostname() or "db-agent"


class DbService:
    def __init__(
        self,
        *,
        name: str,
        cluster: str,
        databases: list[Database],
        certs: DbClientCerts,
        clock: Clock,
        proxy: tuple[str, int],
        tls: tuple[str, str, str],
        send_heartbeat: SendHeartbeat,
        background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
        connector: Connector | None = None,
        admins: dict[str, DbAdmin] | None = None,
        audit: Emitter | None = None,
        warm_connections: bool = True,
        command_runner: CommandRunner = run_command,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.databases = databases
        self.clock = clock
        # Dynamic labels: the commands of this agent's configured databases (the records
        # passed here come from its own configuration, never from the cluster).
        self.labels = {
            db.name: CommandLabelRunner(db.spec.dynamic_labels, runner=command_runner, clock=clock)
            for db in databases
            if db.spec.dynamic_labels
        }
        self.agent = DbAgent(
            DbAgentDeps(
                databases,
                certs,
                clock,
                admins=admins or {},
                audit=audit,
                warm_connections=warm_connections,
            )
        )
        self._send = send_heartbeat
        self._background = background or []
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
    ) -> DbService:
        """The agent of the all-in-one process (``proxy`` is the running ProxyService)."""
        server = auth.server
        name = _agent_name(config)
        host = await local_host_identity(server, config.data_path() / "db", name, "db", clock)
        identity = host.identity
        issuer = DbCerts(server)
        inventory = DatabaseInventory(server)

        async def certs(db_user: str) -> DbClientCert:
            client_key, client_pub = _new_key_pem()
            got = await issuer.agent_cert(identity, db_user, client_pub, "local")
            return DbClientCert(got.cert_pem, client_key.decode(), got.ca_pem, got.expires)

        async def send(db: Database) -> None:
            await inventory.heartbeat(db, identity, "local")

        assert proxy.listener is not None
        service = cls(
            name=name,
            cluster=server.cluster,
            databases=databases_from_config(config, identity.host_id),
            certs=certs,
            clock=clock,
            proxy=in_process_bootstrap(config, proxy),
            tls=host.tls,
            send_heartbeat=send,
            connector=in_process_connector(proxy, host.certs.identity, f"db agent {name}"),
            admins=admins_from_config(config),
            warm_connections=config.db_service.warm_connections,
            audit=server.audit,
        )
        if getattr(proxy, "db", None) is not None:
            # The proxy's db route opens this agent's sessions directly (no tunnel hop; the
            # tunnel still carries cancel requests): DbRoute.add_local_agent.
            proxy.db.add_local_agent(identity.host_id, service.agent)
        service._background.append(follow_local_proxies(service.tunnels, server))
        return service

    @classmethod
    async def remote(cls, config: FileConfig, clock: Clock) -> DbService:
        """An agent on another host: join once with a ``db`` token, then talk to auth through
        the proxy."""
        svc = config.db_service
        ident = await joined_identity(
            config, config.data_path() / "db", name=_agent_name(config), role="db",
            section="db_service", proxy_server=svc.proxy_server, join_token=svc.join_token,
            ca_pin=svc.ca_pin,
        )  # fmt: skip
        server = svc.proxy_server or ident.server
        remote = RemoteAuth(ident, server)

        async def certs(db_user: str) -> DbClientCert:
            client_key, client_pub = _new_key_pem()
            got = await remote.send(
                DB_AGENT_CERT, DbAgentCertRequest(db_user=db_user, public_key=client_pub)
            )
            return DbClientCert(
                got.cert, client_key.decode(), got.ca, datetime.fromisoformat(got.expires)
            )

        async def send(db: Database) -> None:
            await remote.send(DB_HEARTBEAT, ResourceDoc(db))

        cache = ResourceCache()
        background: list[Callable[[], Coroutine[Any, Any, None]]] = [
            lambda: watch_forever(remote, ("proxy",), cache)
        ]
        agent = cls(
            name=ident.host_name,
            cluster=ident.cluster,
            databases=databases_from_config(config, ident.host_id),
            certs=certs,
            clock=clock,
            proxy=parse_addr(server, 3080),
            tls=(ident.read("tls.crt"), ident.read("tls.key"), ident.read("ca.pem")),
            send_heartbeat=send,
            background=background,
            admins=admins_from_config(config),
            warm_connections=config.db_service.warm_connections,
            audit=_SubmitAudit(remote),
        )
        background.append(host_renewer(config, ident, remote, agent.tunnels, clock).run)
        follow_proxies(agent.tunnels, cache)
        return agent

    # ---- running -----------------------------------------------------------------------------

    async def _on_stream(self, stream: Any, header: dict[str, Any]) -> None:
        if header.get("type") != "db":
            log.warning("unknown stream type from proxy", header_type=header.get("type"))
            stream.close()
            return
        await self.agent.on_stream(stream, header)

    async def heartbeat_once(self) -> None:
        """Announce every database with its dynamic labels' latest results (each record
        expires after three missed intervals)."""
        await heartbeat_round(
            [self._current(db) for db in self.databases],
            self._send,
            DB_HEARTBEAT_INTERVAL,
            self.clock,
            "db",
        )

    def _current(self, db: Database) -> Database:
        """``db`` with its dynamic labels' latest results and (MySQL) the version its server
        last greeted with."""
        update: dict[str, object] = {}
        runner = self.labels.get(db.name)
        if runner is not None:
            update["dynamic_labels"] = runner.labels()
        version = self.agent.server_versions.get(db.name)
        if version and version != db.spec.mysql_server_version:
            update["mysql_server_version"] = version
        if not update:
            return db
        return db.model_copy(update={"spec": db.spec.model_copy(update=update)})

    async def run_labels_due(self) -> None:
        """Run the dynamic labels whose period has elapsed (all of them the first time)."""
        for runner in self.labels.values():
            await runner.run_due()

    async def _dynamic_labels(self, labelled: asyncio.Event) -> None:
        await self.run_labels_due()
        labelled.set()  # the first heartbeat carries the labels' values
        async with asyncio.TaskGroup() as group:
            for runner in self.labels.values():
                group.create_task(runner.run(), name="db-command-labels")

    async def _heartbeats(self, labelled: asyncio.Event) -> None:
        await labelled.wait()
        while True:
            await self.heartbeat_once()
            await asyncio.sleep(DB_HEARTBEAT_INTERVAL.total_seconds())

    async def run(self) -> None:
        """Serve until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.tunnels.run(), name="db-tunnels")
            labelled = asyncio.Event()
            group.create_task(self._dynamic_labels(labelled), name="db-dynamic-labels")
            group.create_task(self._heartbeats(labelled), name="db-heartbeat")
            for factory in self._background:
                group.create_task(factory(), name="db-background")

    async def close(self) -> None:
        await self.tunnels.close()
        await self.agent.close()
