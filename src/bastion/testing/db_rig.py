"""An in-process database-access rig: auth, proxy (one port), db agent on a reverse tunnel, and a
real PostgreSQL that accepts only db-CA client certificates.

Layer: ``testing`` (used by ``tests/integration/test_db_postgres.py`` and ``bench/db.py``; nothing
in ``src`` imports it). The proxy listens on 127.0.0.1 (free port), the agent dials it over TLS
with ALPN ``bastion-tunnel/1`` exactly as a remote agent does, and the PostgreSQL server has the
db CA's server certificate and ``hostssl ... cert`` (:mod:`bastion.testing.peers.postgres_tls`).
Role ``dba`` allows ``db_users: ["{{internal.db_users}}"]``, ``db_names: [postgres]`` on
databases labelled ``env=dev``; user ``alice`` has ``db_users: [alice_db]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bastion.agent.db_provision import DbAdmin
from bastion.agent.db_service import DbAgent, DbAgentDeps, DbClientCert
from bastion.audit.emitter import Emitter
from bastion.auth.db_certs import DbCerts
from bastion.auth.gate import Gate
from bastion.auth.recordings import InProcessTarget, RecordingService
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend import open_backend
from bastion.backend.sqlite import WriterKind
from bastion.clock import SystemClock
from bastion.config.schema import AuditLogConfig, StorageConfig
from bastion.errors import ConnectionProblem, NotFound
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.proxy.db_route import DbRoute, DbRouteDeps
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.recording.spool import Spool
from bastion.recording.store import LocalRecordingStore, RecordingStore
from bastion.recording.uploader import Uploader
from bastion.services.cache import StoreRoleSource
from bastion.tasks import spawn
from bastion.testing import make_auth, new_tls_key
from bastion.testing.peers.postgres import PgServer
from bastion.testing.peers.postgres_tls import psql_local, start_postgres_tls
from bastion.tunnel import TunnelServer, client_tls_context
from bastion.tunnel.memory import memory_pair
from bastion.tunnel.pool import TunnelPool
from bastion.tunnel.session import MuxSession
from bastion.types.access import Role, RoleConditions, RoleSpec, User, UserSpec
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

__all__ = [
    "AgentLauncher",
    "AgentSpec",
    "DbRig",
    "Recorder",
    "RigParts",
    "dba_and_alice",
    "run_agent",
    "rig_auth",
    "rig_cluster",
    "start_db_rig",
]

CLUSTER = "test.local"


@dataclass
class Recorder:
    """Forwards to the audit log and keeps the events (for assertions) or, with ``keep``
    false, only counts them (benchmarks: a list of every event would be the process's bulk)."""

    inner: Emitter
    events: list[dict[str, Any]] = field(default_factory=list)
    keep: bool = True
    counts: Counter[str] = field(default_factory=Counter)

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> Any:
        self._note(event_type, outcome, fields)
        return await self.inner.emit(event_type, outcome=outcome, **fields)

    async def emit_many(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> Any:
        for event_type, outcome, fields in specs:
            self._note(event_type, outcome, fields)
        return await self.inner.emit_many(specs)  # type: ignore[attr-defined]

    async def append_many(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> int:
        for event_type, outcome, fields in specs:
            self._note(event_type, outcome, fields)
        many = getattr(self.inner, "append_many", None)
        if many is None:
            return len(await self.inner.emit_many(specs))  # type: ignore[attr-defined]
        return int(await many(specs))

    def bulk(self, event_type: str, *, outcome: str = "success", **shared: object) -> _Bulk:
        inner = getattr(self.inner, "bulk", None)
        return _Bulk(
            self,
            event_type,
            outcome,
            shared,
            inner and inner(event_type, outcome=outcome, **shared),
        )

    def _note(self, event_type: str, outcome: str, fields: Mapping[str, object]) -> None:
        self.counts[event_type] += 1
        if self.keep:
            self.events.append({"type": event_type, "outcome": outcome, **fields})

    def of(self, event_type: str) -> list[dict[str, Any]]:
        assert self.keep, "this recorder only counts events"
        return [e for e in self.events if e["type"] == event_type]


@dataclass
class _Bulk:
    """:meth:`Recorder.bulk`: notes each event, then the inner log's bulk writer (or its
    ``append_many``) stores them."""

    recorder: Recorder
    event_type: str
    outcome: str
    shared: Mapping[str, object]
    inner: Any

    async def append(self, owns: Sequence[Mapping[str, object]]) -> int:
        if self.inner is None:
            specs = [(self.event_type, self.outcome, {**self.shared, **own}) for own in owns]
            return await self.recorder.append_many(specs)
        recorder = self.recorder
        if recorder.keep:
            for own in owns:
                recorder._note(self.event_type, self.outcome, {**self.shared, **own})
            return int(await self.inner.append(owns))
        stored = int(await self.inner.append(owns))  # a benchmark's: counts only, once stored
        recorder.counts[self.event_type] += len(owns)
        return stored


@dataclass
class DbRig:
    port: int
    """The proxy's one port."""
    tmp: Path
    pg: PgServer
    certs: DbCerts
    audit: Recorder
    locks: LockWatcher
    alice: Identity
    auth: AuthServer | None = None
    """The auth server (its recording store holds the database sessions' recordings)."""

    async def login(self, db_user: str, name: str) -> str:
        """What ``bsh db login pg1 --db-user U`` gives alice; returns a libpq conninfo."""
        key_pem, pub = new_tls_key()
        cert = await self.certs.user_cert(
            self.alice, pub, "pg1", db_user, "postgres", timedelta(hours=1), "test"
        )
        return self._files(name, cert.cert_pem, key_pem, cert.ca_pem, self.port, db_user)

    async def direct(self, db_user: str, name: str) -> str:
        """A conninfo straight to PostgreSQL with a db-CA client certificate (the baseline)."""
        key_pem, pub = new_tls_key()
        agent = Identity(
            cluster=CLUSTER,
            user="bench",
            kind="host",
            roles=("db",),
            host_id="bench",
            expires=self.alice.expires,
        )
        cert = await self.certs.agent_cert(agent, db_user, pub, "bench")
        return self._files(name, cert.cert_pem, key_pem, cert.ca_pem, self.pg.port, db_user)

    def _files(self, name: str, crt: str, key: bytes, ca: str, port: int, user: str) -> str:
        paths = {n: self.tmp / f"{name}.{n}" for n in ("crt", "key", "ca")}
        paths["crt"].write_text(crt)
        paths["key"].write_bytes(key)
        paths["key"].chmod(0o600)
        paths["ca"].write_text(ca)
        return (
            f"host=127.0.0.1 port={port} dbname=postgres user={user} sslmode=verify-ca "
            f"sslrootcert={paths['ca']} sslcert={paths['crt']} sslkey={paths['key']}"
        )


@asynccontextmanager
async def rig_auth(
    tmp: Path,
    clock: SystemClock,
    *,
    sqlite: bool,
    recordings: RecordingStore | None = None,
    sqlite_writer: WriterKind = StorageConfig().writer,
) -> AsyncIterator[AuthServer]:
    """The rig's auth server: over a MemoryBackend (tests), or with ``sqlite`` over the
    SQLite backend of ``bastion start`` (benchmarks: the audit log's real write path, and its
    signed checkpoints every ``checkpoint_interval`` seconds, as ``bastion start`` runs them;
    its writer where ``sqlite_writer`` says, by default where ``bastion start`` runs it)."""
    if not sqlite:
        yield (await make_auth(clock=clock, cluster=CLUSTER, recordings=recordings)).auth
        return
    backend = await open_backend(
        "sqlite", path=str(tmp / "backend.sqlite"), clock=clock, writer=sqlite_writer
    )
    try:
        auth = AuthServer(
            AuthDeps(
                backend=backend, clock=clock, cluster=CLUSTER, kek=b"\x01" * 32,
                recordings=recordings,
            )
        )  # fmt: skip
        await auth.init()
        checkpointer = await auth.audit_checkpointer()
        interval = AuditLogConfig().checkpoint_interval
        checkpoints = asyncio.ensure_future(checkpointer.run_forever(interval))
        try:
            yield auth
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
    finally:
        await backend.close()


@asynccontextmanager
async def start_db_rig(
    tmp: Path,
    *,
    audit_queries: bool = True,
    colocated: bool = False,
    sqlite: bool = False,
    sqlite_writer: WriterKind = StorageConfig().writer,
    keep_events: bool = True,
    launch_agent: AgentLauncher | None = None,
) -> AsyncIterator[DbRig]:
    """Start everything; stop it all on exit (raises PostgresUnavailable without a server).

    ``colocated``: the agent's tunnel is handed to the proxy in memory, as the all-in-one
    ``bastion start`` does (:meth:`bastion.agent.db_runner.DbService.local`), instead of TLS
    over loopback (a remote agent). ``sqlite``: auth over the SQLite backend (see
    :func:`rig_auth`). ``keep_events`` false: the rig's :class:`Recorder` only counts the
    events (benchmarks). ``launch_agent``: the agent in another process
    (:func:`rig_cluster`)."""
    clock = SystemClock()
    store = LocalRecordingStore(tmp / "recordings")
    async with rig_auth(
        tmp, clock, sqlite=sqlite, recordings=store, sqlite_writer=sqlite_writer
    ) as auth:
        async with _db_rig(
            tmp, auth, clock, audit_queries, colocated, keep_events, launch_agent
        ) as rig:
            yield rig


@asynccontextmanager
async def _db_rig(
    tmp: Path,
    auth: AuthServer,
    clock: SystemClock,
    audit_queries: bool,
    colocated: bool,
    keep_events: bool = True,
    launch_agent: AgentLauncher | None = None,
) -> AsyncIterator[DbRig]:
    recordings = Uploader(
        Spool(tmp / "db-recording-spool"), InProcessTarget(RecordingService(auth))
    )
    certs = DbCerts(auth)
    srv_key, srv_pub = new_tls_key()
    server = await certs.server_cert(
        "localhost", srv_pub, ["localhost"], ["127.0.0.1"], timedelta(days=1), "admin", "rig"
    )
    pg = await asyncio.to_thread(
        start_postgres_tls, tmp, server.cert_pem, srv_key.decode(), server.ca_pem
    )
    try:
        psql_local(
            pg,
            "create role alice_db login; create role admin_db login superuser;"
            "create table t(x int); insert into t values (1), (2); grant select on t to alice_db",
        )
        alice = await dba_and_alice(auth, clock, ["postgres"])
        database = Database(
            metadata=Metadata(name="pg1", labels={"env": "dev"}),
            spec=DatabaseSpec(uri=f"127.0.0.1:{pg.port}", host_id="dbagent-1"),
        )
        admins = {"pg1": DbAdmin("admin_db")}  # create_db_user (test_db_provision.py)
        async with rig_cluster(
            auth, certs, clock, database, audit_queries=audit_queries, colocated=colocated,
            recordings=recordings, admins=admins, keep_events=keep_events,
            launch_agent=launch_agent,
        ) as parts:  # fmt: skip
            yield DbRig(parts.port, tmp, pg, certs, parts.audit, parts.locks, alice, auth)
    finally:
        await asyncio.to_thread(pg.stop)


async def dba_and_alice(auth: Any, clock: SystemClock, db_names: list[str]) -> Identity:
    """Role ``dba`` (``db_users: ["{{internal.db_users}}"]``, ``db_names``, databases labelled
    ``env=dev``) and user ``alice`` (``db_users: [alice_db]``); returns alice's identity."""
    await auth.roles.create(
        Role(
            metadata=Metadata(name="dba"),
            spec=RoleSpec(
                allow=RoleConditions(
                    db_labels={"env": "dev"},
                    db_users=["{{internal.db_users}}"],
                    db_names=db_names,
                )
            ),
        )
    )
    user = await auth.users.create(
        User(
            metadata=Metadata(name="alice"),
            spec=UserSpec(roles=["dba"], traits={"db_users": ["alice_db"]}, epoch="e1"),
        )
    )
    return Identity(
        cluster=CLUSTER,
        user="alice",
        roles=("dba",),
        traits={"db_users": ("alice_db",)},
        expires=clock.now() + timedelta(hours=1),
        user_epoch=user.spec.epoch,
    )


@dataclass(frozen=True)
class AgentSpec:
    """What the database's agent needs to run in another process, as on the database's host
    (``bench/db.py --agent-process``): the proxy to tunnel to, its host certificate, the
    database it serves and client certificates issued by auth for the db users it may log in
    as (auth is in the rig's process)."""

    proxy: tuple[str, int]
    tls_cert: str
    tls_key: str
    host_ca: str
    database: Database
    client_certs: dict[str, tuple[str, str, str]]
    """db user -> (certificate, key, db CA)."""

    def to_json(self) -> str:
        data = {**self.__dict__, "database": self.database.model_dump(mode="json")}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> AgentSpec:
        data = json.loads(text)
        return cls(
            proxy=(data["proxy"][0], int(data["proxy"][1])),
            tls_cert=data["tls_cert"],
            tls_key=data["tls_key"],
            host_ca=data["host_ca"],
            database=Database.model_validate(data["database"]),
            client_certs={k: (v[0], v[1], v[2]) for k, v in data["client_certs"].items()},
        )


AgentLauncher = Callable[[AgentSpec], Awaitable[Callable[[], Awaitable[None]]]]
"""Starts the agent elsewhere (a child process) and returns how to stop it."""


async def run_agent(spec: AgentSpec) -> None:
    """Serve ``spec.database`` over a reverse tunnel to the proxy until cancelled (the agent
    process of ``bench/db.py --agent-process``)."""
    clock = SystemClock()
    issued = clock.now()

    async def certs(db_user: str) -> DbClientCert:
        try:
            cert, key, ca = spec.client_certs[db_user]
        except KeyError:
            raise ConnectionProblem(f"this agent has no client certificate for {db_user}") from None
        return DbClientCert(cert, key, ca, issued + timedelta(hours=1))

    agent = DbAgent(DbAgentDeps([spec.database], certs, clock))
    pool = TunnelPool(
        spec.proxy, client_tls_context(spec.tls_cert, spec.tls_key, spec.host_ca), agent.on_stream
    )
    try:
        await pool.run()
    finally:
        await pool.close()
        await agent.close()


@dataclass
class RigParts:
    """A running rig cluster: the proxy's port and what tests and rigs reach into."""

    port: int
    audit: Recorder
    locks: LockWatcher
    route: DbRoute
    tls: ProxyTLS
    agent: DbAgent | None = None
    """The database's agent when it runs in this process (what it learned: server versions)."""


@asynccontextmanager
async def rig_cluster(
    auth: Any,
    certs: DbCerts,
    clock: SystemClock,
    database: Database,
    *,
    audit_queries: bool,
    colocated: bool = False,
    recordings: Uploader | None = None,
    admins: Mapping[str, DbAdmin] | None = None,
    keep_events: bool = True,
    launch_agent: AgentLauncher | None = None,
) -> AsyncIterator[RigParts]:
    """Proxy (one port, its database route) and the database's agent (host id
    ``database.spec.host_id``) on a reverse tunnel to it, for any protocol. ``launch_agent``:
    the agent runs where it starts it (another process, as on the database's host), with
    client certificates for ``alice_db``."""
    registry = LiveRegistry()
    audit = Recorder(auth.audit, keep=keep_events)
    locks = LockWatcher(clock=clock, audit=audit, registry=registry, grace=0)
    tunnel = TunnelServer(registry, clock)
    hour = timedelta(hours=1)
    proxy_key, proxy_pub = new_tls_key()
    proxy_id = Identity(
        cluster=CLUSTER, user="proxy", kind="host", roles=("proxy",), host_id="proxy",
        expires=clock.now() + hour,
    )  # fmt: skip
    pcerts = await auth.issuer.issue_host(
        proxy_id, proxy_pub, ["proxy"], ["localhost"], ["127.0.0.1"], hour, "rig"
    )
    host_id = database.spec.host_id
    agent_id = Identity(
        cluster=CLUSTER, user=host_id, kind="host", roles=("db",), host_id=host_id,
        traits={"hostname": (host_id,)}, expires=clock.now() + hour,
    )  # fmt: skip
    agent_key, agent_pub = new_tls_key()
    acerts = await auth.issuer.issue_host(agent_id, agent_pub, [host_id], [], [], hour, "rig")

    class Directory:
        async def get_database(self, name: str) -> Database:
            if name != database.metadata.name:
                raise NotFound(f"database {name} not found")
            return database

    route = DbRoute(
        DbRouteDeps(
            databases=Directory(),
            roles=StoreRoleSource(auth.watched_roles),
            tunnel=tunnel,
            audit=audit,
            registry=registry,
            clock=clock,
            locks=locks,
            gate=Gate.for_auth(auth),
            audit_queries=audit_queries,
            recordings=recordings,
        )
    )
    tls = ProxyTLS(pcerts.tls_cert, proxy_key.decode(), pcerts.tls_user_ca, pcerts.tls_host_ca)
    listener = ProxyListener(
        ListenerConfig(port=0, max_unauthenticated_per_ip=1024),
        ListenerDeps(tls=tls, clock=clock, audit=audit, tunnel=tunnel, db=route),
    )
    await listener.start()

    async def agent_here() -> Callable[[], Awaitable[None]]:
        """The agent in this process (a remote one on a real tunnel, or co-located)."""

        async def agent_certs(db_user: str) -> DbClientCert:
            key_pem, pub = new_tls_key()
            got = await certs.agent_cert(agent_id, db_user, pub, "local")
            return DbClientCert(got.cert_pem, key_pem.decode(), got.ca_pem, got.expires)

        deps = DbAgentDeps([database], agent_certs, clock, admins=dict(admins or {}), audit=audit)
        agent = here[0] = DbAgent(deps)
        if colocated:  # as DbService.local: sessions skip the in-memory tunnel
            route.add_local_agent(host_id, agent)

        async def in_memory(new_session: Callable[[], MuxSession]) -> MuxSession:
            agent_end, proxy_end = memory_pair("db rig agent")
            session = new_session()
            agent_end.set_protocol(session)
            session.connection_made(agent_end)
            tunnel.accept(proxy_end, acerts.identity)
            return session

        pool = TunnelPool(
            ("127.0.0.1", listener.port),
            client_tls_context(acerts.tls_cert, agent_key.decode(), acerts.tls_host_ca),
            agent.on_stream,
            connector=in_memory if colocated else None,
        )
        running = spawn(pool.run(), "db-rig-agent")

        async def stop() -> None:
            running.cancel()
            await pool.close()
            await agent.close()

        return stop

    async def agent_elsewhere(launch: AgentLauncher) -> Callable[[], Awaitable[None]]:
        """The agent where ``launch`` starts it, with a client certificate for alice_db."""
        client_key, client_pub = new_tls_key()
        client = await certs.agent_cert(agent_id, "alice_db", client_pub, "rig")
        spec = AgentSpec(
            ("127.0.0.1", listener.port), acerts.tls_cert, agent_key.decode(),
            acerts.tls_host_ca, database,
            {"alice_db": (client.cert_pem, client_key.decode(), client.ca_pem)},
        )  # fmt: skip
        return await launch(spec)

    here: list[DbAgent | None] = [None]
    stop_agent = await (agent_here() if launch_agent is None else agent_elsewhere(launch_agent))
    try:
        for _ in range(500):
            if tunnel.is_online(host_id):
                break
            await asyncio.sleep(0.02)
        yield RigParts(listener.port, audit, locks, route, tls, here[0])
    finally:
        await stop_agent()
        await listener.close()
        await route.close()
        await tunnel.close()
