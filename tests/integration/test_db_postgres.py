"""Database access end to end: real PostgreSQL (``hostssl ... cert``), real ``psql`` and asyncpg,
through the proxy's shared port (in-band SSLRequest) and a database agent on a real reverse
tunnel. Allowed query audited (simple and extended protocol), denied db user refused with one
28000 line, a lock cuts a live session."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.db_service import DbAgent, DbAgentDeps, DbClientCert
from bastion.audit.emitter import Emitter
from bastion.auth.db_certs import DbCerts
from bastion.auth.gate import Gate
from bastion.clock import SystemClock
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.proxy.db_route import DbRoute, DbRouteDeps
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.services.cache import StoreRoleSource
from bastion.testing import make_auth, new_tls_key, require_binary
from bastion.testing.peers.postgres import PostgresUnavailable
from bastion.testing.peers.postgres_tls import psql_local, start_postgres_tls
from bastion.tunnel import TunnelServer, client_tls_context
from bastion.tunnel.pool import TunnelPool
from bastion.types.access import (
    Lock,
    LockSpec,
    LockTarget,
    Role,
    RoleConditions,
    RoleSpec,
    User,
    UserSpec,
)
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]

CLUSTER = "test.local"


@dataclass
class Recorder:
    """Forwards to the audit log and keeps the events for the assertions."""

    inner: Emitter
    events: list[dict[str, Any]] = field(default_factory=list)

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: object) -> Any:
        self.events.append({"type": event_type, "outcome": outcome, **fields})
        return await self.inner.emit(event_type, outcome=outcome, **fields)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]


@dataclass
class Rig:
    port: int
    tmp: Path
    certs: DbCerts
    audit: Recorder
    locks: LockWatcher
    alice: Identity
    host_ca: str

    async def login(self, db_user: str, name: str) -> str:
        """``bsh db login``'s files for alice; returns the psql connection string."""
        key_pem, pub = new_tls_key()
        cert = await self.certs.user_cert(
            self.alice, pub, "pg1", db_user, "postgres", timedelta(hours=1), "test"
        )
        paths = {n: self.tmp / f"{name}.{n}" for n in ("crt", "key", "ca")}
        paths["crt"].write_text(cert.cert_pem)
        paths["key"].write_bytes(key_pem)
        paths["key"].chmod(0o600)
        paths["ca"].write_text(cert.ca_pem)
        return (
            f"host=127.0.0.1 port={self.port} dbname=postgres user={db_user} sslmode=verify-ca "
            f"sslrootcert={paths['ca']} sslcert={paths['crt']} sslkey={paths['key']}"
        )


async def _psql(conninfo: str, sql: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"),
        conninfo,
        "-X",
        "-Atc",
        sql,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def _until(check: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    require_binary("psql")
    clock = SystemClock()
    fx = await make_auth(clock=clock, cluster=CLUSTER)
    auth = fx.auth
    certs = DbCerts(auth)
    srv_key, srv_pub = new_tls_key()
    server = await certs.server_cert(
        "localhost", srv_pub, ["localhost"], ["127.0.0.1"], timedelta(days=1), "admin", "test"
    )
    try:
        pg = await asyncio.to_thread(
            start_postgres_tls, tmp_path, server.cert_pem, srv_key.decode(), server.ca_pem
        )
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        psql_local(
            pg,
            "create role alice_db login; create role admin_db login superuser;"
            "create table t(x int); insert into t values (1), (2); grant select on t to alice_db",
        )
        await auth.roles.create(
            Role(
                metadata=Metadata(name="dba"),
                spec=RoleSpec(
                    allow=RoleConditions(
                        db_labels={"env": "dev"},
                        db_users=["{{internal.db_users}}"],
                        db_names=["postgres"],
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
        alice = Identity(
            cluster=CLUSTER,
            user="alice",
            roles=("dba",),
            traits={"db_users": ("alice_db",)},
            expires=clock.now() + timedelta(hours=1),
            user_epoch=user.spec.epoch,
        )
        registry = LiveRegistry()
        audit = Recorder(auth.audit)
        locks = LockWatcher(clock=clock, audit=audit, registry=registry, grace=0)
        tunnel = TunnelServer(registry, clock)
        proxy_key, proxy_pub = new_tls_key()
        host = Identity(
            cluster=CLUSTER,
            user="proxy",
            kind="host",
            roles=("proxy",),
            host_id="proxy",
            expires=clock.now() + timedelta(hours=1),
        )
        pcerts = await auth.issuer.issue_host(
            host, proxy_pub, ["proxy"], ["localhost"], ["127.0.0.1"], timedelta(hours=1), "t"
        )
        agent_id = Identity(
            cluster=CLUSTER,
            user="dbagent-1",
            kind="host",
            roles=("db",),
            host_id="dbagent-1",
            traits={"hostname": ("dbagent",)},
            expires=clock.now() + timedelta(hours=1),
        )
        agent_key, agent_pub = new_tls_key()
        acerts = await auth.issuer.issue_host(
            agent_id, agent_pub, ["dbagent-1"], [], [], timedelta(hours=1), "t"
        )
        database = Database(
            metadata=Metadata(name="pg1", labels={"env": "dev"}),
            spec=DatabaseSpec(uri=f"127.0.0.1:{pg.port}", host_id="dbagent-1"),
        )

        class Directory:
            async def get_database(self, name: str) -> Database:
                from bastion.errors import NotFound

                if name != database.metadata.name:
                    raise NotFound(name)
                return database

        route = DbRoute(
            DbRouteDeps(
                databases=Directory(),
                roles=StoreRoleSource(auth.roles),
                tunnel=tunnel,
                audit=audit,
                registry=registry,
                clock=clock,
                locks=locks,
                gate=Gate.for_auth(auth),
            )
        )
        listener = ProxyListener(
            ListenerConfig(port=0),
            ListenerDeps(
                tls=ProxyTLS(
                    pcerts.tls_cert, proxy_key.decode(), pcerts.tls_user_ca, pcerts.tls_host_ca
                ),
                clock=clock,
                audit=audit,
                tunnel=tunnel,
                db=route,
            ),
        )
        await listener.start()

        async def agent_certs(db_user: str) -> DbClientCert:
            key_pem, pub = new_tls_key()
            got = await certs.agent_cert(agent_id, db_user, pub, "local")
            return DbClientCert(got.cert_pem, key_pem.decode(), got.ca_pem, got.expires)

        agent = DbAgent(DbAgentDeps(databases=[database], certs=agent_certs, clock=clock))
        pool = TunnelPool(
            ("127.0.0.1", listener.port),
            client_tls_context(acerts.tls_cert, agent_key.decode(), acerts.tls_host_ca),
            lambda stream, header: agent.on_stream(stream, header),
        )
        running = asyncio.ensure_future(pool.run())
        for _ in range(200):
            if tunnel.is_online("dbagent-1"):
                break
            await asyncio.sleep(0.02)
        assert tunnel.is_online("dbagent-1")
        try:
            yield Rig(listener.port, tmp_path, certs, audit, locks, alice, pcerts.tls_host_ca)
        finally:
            running.cancel()
            await pool.close()
            await listener.close()
            await tunnel.close()
    finally:
        await asyncio.to_thread(pg.stop)


async def test_psql_allowed_denied_and_locked(rig: Rig) -> None:
    # Allowed: psql's simple protocol, through the one port, as alice_db.
    conninfo = await rig.login("alice_db", "alice")
    code, out, err = await _psql(conninfo, "select x from t order by x; select current_user")
    assert code == 0, (err, str(rig.audit.events[-1]))
    assert out.split() == ["1", "2", "alice_db"]
    started = rig.audit.of("db.session.start")
    assert started[-1]["outcome"] == "success" and started[-1]["db_user"] == "alice_db"
    queries = [e["query"] for e in rig.audit.of("db.session.query")]
    assert "select x from t order by x; select current_user" in queries
    await _until(lambda: bool(rig.audit.of("db.session.end")))
    assert rig.audit.of("db.session.end")[-1]["bytes_out"] > 0

    # Extended protocol with a parameter (asyncpg): the value is audited.
    asyncpg = pytest.importorskip("asyncpg")
    ctx = ssl.create_default_context(cafile=str(rig.tmp / "alice.ca"))
    ctx.check_hostname = False
    ctx.load_cert_chain(rig.tmp / "alice.crt", rig.tmp / "alice.key")
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=rig.port,
        user="alice_db",
        database="postgres",
        ssl=ctx,
        timeout=15,
    )
    try:
        assert await conn.fetchval("select x from t where x = $1", 2) == 2
    finally:
        await conn.close()
    # asyncpg binds an int4 in binary: audited as hex (text-format values as text).
    await _until(
        lambda: any(
            e["query"] == "select x from t where x = $1" and e["parameters"] == ["\\x00000002"]
            for e in rig.audit.of("db.session.query")
            if e["protocol"] == "extended"
        )
    )

    # Denied: a db user no role allows: one clean 28000 line, the reason in audit.
    denied = await rig.login("admin_db", "admin")
    code, out, err = await _psql(denied, "select 1")
    assert code != 0
    assert 'access to database "pg1" as db user "admin_db"' in err and "denied" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    refusal = rig.audit.of("db.session.start")[-1]
    assert refusal["outcome"] == "failure" and "admin_db" in refusal["reason"]

    # Locked: a live psql session is cut within a second, with the lock's message.
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"),
        conninfo,
        "-X",
        "-Atc",
        "select pg_sleep(30)",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await _until(lambda: rig.audit.of("db.session.query")[-1]["query"] == "select pg_sleep(30)")
    lock = Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(user="alice"), message="laptop stolen"),
    )
    rig.locks.put(lock)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await rig.locks.enforce([lock])
    _, err_b = await asyncio.wait_for(proc.communicate(), 10)
    assert loop.time() - t0 < 2
    assert proc.returncode != 0 and "laptop stolen" in err_b.decode()
    # ...and a new session is refused while the lock holds.
    code, _, err = await _psql(conninfo, "select 1")
    assert code != 0 and "laptop stolen" in err
