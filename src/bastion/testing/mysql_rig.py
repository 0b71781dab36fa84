"""An in-process MySQL/MariaDB access rig: auth, proxy (one port), db agent on a reverse tunnel,
and a real MariaDB that accepts only TLS with db-CA client certificates (``REQUIRE SUBJECT``).

Layer: ``testing`` (used by ``tests/integration/test_db_mysql.py`` and ``bench/db.py``; nothing
in ``src`` imports it). As :mod:`bastion.testing.db_rig` for PostgreSQL: the agent dials the
proxy over TLS with ALPN ``bastion-tunnel/1``, the proxy's database route serves ALPN
``bastion-mysql/1``. The MariaDB server has the db CA's server certificate
(:mod:`bastion.testing.peers.mariadb`) and the accounts::

    CREATE USER alice_db@'%' REQUIRE SUBJECT '/CN=alice_db/O=test.local';  -- app.* only
    CREATE USER admin_db@'%' REQUIRE SUBJECT '/CN=admin_db/O=test.local';  -- everything

Role ``dba`` allows ``db_users: ["{{internal.db_users}}"]``, ``db_names: [app]`` on databases
labelled ``env=dev``; user ``alice`` has ``db_users: [alice_db]``. The local listener of
``bsh proxy db`` is the test's to start (``bastion.cli.bsh_db.local_mysql_listener``) with
:meth:`MySQLRig.login`'s files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bastion.agent.db_provision import DbAdmin
from bastion.agent.db_service import DbAgent
from bastion.auth.db_certs import DbCerts
from bastion.auth.server import AuthServer
from bastion.backend.sqlite import WriterKind
from bastion.clock import SystemClock
from bastion.config.schema import StorageConfig
from bastion.locks.watcher import LockWatcher
from bastion.proxy.mysql_listener import MySQLListener
from bastion.testing import new_tls_key
from bastion.testing.db_rig import (
    AgentLauncher,
    Recorder,
    dba_and_alice,
    rig_auth,
    rig_cluster,
)
from bastion.testing.peers.mariadb import MariaDBServer, start_mariadb
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

__all__ = ["MySQLFiles", "MySQLRig", "start_mysql_rig"]

CLUSTER = "test.local"
DB_NAME = "my1"


@dataclass(frozen=True)
class MySQLFiles:
    crt: Path
    key: Path
    ca: Path


@dataclass
class MySQLRig:
    port: int
    """The proxy's one port."""
    mysql_port: int
    """The proxy's dedicated MySQL port (:class:`bastion.proxy.mysql_listener.MySQLListener`)."""
    tmp: Path
    server: MariaDBServer
    certs: DbCerts
    audit: Recorder
    locks: LockWatcher
    alice: Identity
    agent: DbAgent | None = None
    """The database's agent when it runs in this process."""

    async def login(
        self, db_user: str, name: str, db_name: str = "", identity: Identity | None = None
    ) -> MySQLFiles:
        """What ``bsh db login my1 --db-user U`` gives alice (or ``identity``): certificate,
        key, CA files."""
        key_pem, pub = new_tls_key()
        cert = await self.certs.user_cert(
            identity or self.alice, pub, DB_NAME, db_user, db_name, timedelta(hours=1), "test"
        )
        return self._files(name, cert.cert_pem, key_pem, cert.ca_pem)

    async def direct(self, db_user: str, name: str) -> MySQLFiles:
        """A db-CA client certificate to reach MariaDB directly (the bench's baseline)."""
        key_pem, pub = new_tls_key()
        agent = Identity(
            cluster=CLUSTER, user="bench", kind="host", roles=("db",), host_id="bench",
            expires=self.alice.expires,
        )  # fmt: skip
        cert = await self.certs.agent_cert(agent, db_user, pub, "bench")
        return self._files(name, cert.cert_pem, key_pem, cert.ca_pem)

    def _files(self, name: str, crt: str, key: bytes, ca: str) -> MySQLFiles:
        files = MySQLFiles(*(self.tmp / f"{name}.{n}" for n in ("crt", "key", "ca")))
        files.crt.write_text(crt)
        files.key.write_bytes(key)
        files.key.chmod(0o600)
        files.ca.write_text(ca)
        return files


SETUP_SQL = (
    "CREATE DATABASE app; CREATE DATABASE other;"
    "CREATE TABLE app.t (x INT, s VARCHAR(20)); INSERT INTO app.t VALUES (1, 'a'), (2, 'b');"
    "CREATE USER alice_db@'%' REQUIRE SUBJECT '/CN=alice_db/O={cluster}';"
    "GRANT ALL ON app.* TO alice_db@'%'; GRANT ALL ON other.* TO alice_db@'%';"
    "CREATE USER admin_db@'%' REQUIRE SUBJECT '/CN=admin_db/O={cluster}';"
    "GRANT ALL ON *.* TO admin_db@'%';"
    "CREATE ROLE reader; GRANT SELECT ON app.* TO reader; GRANT reader TO admin_db@'%' WITH "
    "ADMIN OPTION; CREATE ROLE tagger; GRANT INSERT ON app.* TO tagger; GRANT tagger TO "
    "admin_db@'%' WITH ADMIN OPTION;"
)
"""Accounts: no password, TLS with a client certificate of exactly this subject (the agent's
db-CA certificate; the server's ``ssl_ca`` is the db CA). ``other`` is granted to alice_db on
purpose: only Bastion's ``db_names`` keeps her out of it. ``admin_db`` is the agent's
``admin_user`` for ``create_db_user`` (database roles ``reader`` and ``tagger``)."""


@asynccontextmanager
async def start_mysql_rig(
    tmp: Path,
    *,
    audit_queries: bool = True,
    colocated: bool = False,
    sqlite: bool = False,
    sqlite_writer: WriterKind = StorageConfig().writer,
    keep_events: bool = True,
    launch_agent: AgentLauncher | None = None,
) -> AsyncIterator[MySQLRig]:
    """Start everything; stop it all on exit (raises MariaDBUnavailable without a server).

    ``colocated``: the agent's tunnel is handed to the proxy in memory (the all-in-one
    ``bastion start``) instead of TLS over loopback (a remote agent). ``sqlite``: auth over
    the SQLite backend (:func:`bastion.testing.db_rig.rig_auth`). ``keep_events`` false: the
    rig's recorder only counts the events (benchmarks)."""
    clock = SystemClock()
    async with rig_auth(tmp, clock, sqlite=sqlite, sqlite_writer=sqlite_writer) as auth:
        async with _mysql_rig(
            tmp, auth, clock, audit_queries, colocated, keep_events, launch_agent
        ) as rig:
            yield rig


@asynccontextmanager
async def _mysql_rig(
    tmp: Path,
    auth: AuthServer,
    clock: SystemClock,
    audit_queries: bool,
    colocated: bool,
    keep_events: bool = True,
    launch_agent: AgentLauncher | None = None,
) -> AsyncIterator[MySQLRig]:
    certs = DbCerts(auth)
    srv_key, srv_pub = new_tls_key()
    cert = await certs.server_cert(
        "localhost", srv_pub, ["localhost"], ["127.0.0.1"], timedelta(days=1), "admin", "rig"
    )
    server = await asyncio.to_thread(
        start_mariadb, None, cert.cert_pem, srv_key.decode(), cert.ca_pem
    )
    try:
        await asyncio.to_thread(server.sql, SETUP_SQL.format(cluster=CLUSTER))
        alice = await dba_and_alice(auth, clock, ["app"])
        database = Database(
            metadata=Metadata(name=DB_NAME, labels={"env": "dev"}),
            spec=DatabaseSpec(protocol="mysql", uri=f"127.0.0.1:{server.port}", host_id="a1"),
        )
        async with rig_cluster(
            auth, certs, clock, database, audit_queries=audit_queries, colocated=colocated,
            keep_events=keep_events, admins={DB_NAME: DbAdmin("admin_db")},
            launch_agent=launch_agent,
        ) as parts:  # fmt: skip
            # As an operator whose MySQL databases are all MariaDB sets it
            # (proxy_service.mysql_server_version): the port offers MariaDB's bulk execution.
            version = "5.5.5-" + (await asyncio.to_thread(server.sql, "select version()")).strip()
            mysql_listener = MySQLListener(
                "127.0.0.1:0", parts.tls, parts.route, clock, parts.audit,
                server_version=version,
            )  # fmt: skip
            await mysql_listener.start()
            try:
                yield MySQLRig(
                    parts.port, mysql_listener.port, tmp, server, certs, parts.audit,
                    parts.locks, alice, parts.agent,
                )  # fmt: skip
            finally:
                await mysql_listener.close()
    finally:
        await asyncio.to_thread(server.stop)
