"""The database agent as a product: ``bastion start --roles=db`` on "another host" joins the shared
cluster with a ``db`` token, heartbeats the database of its ``db_service`` config, and the
cluster's proxy routes to it. Then, as a user: ``bsh db ls`` (RBAC-filtered), ``bsh db login`` +
``psql "service=..."``, ``bsh proxy db`` + psql, ``bsh db connect``, ``bsh db env``, ``bsh db
logout``; ``bctl get db`` for the admin. Real PostgreSQL (``hostssl ... cert``), real psql.
(What ``bsh db ls`` hides from whom is unit-tested: tests/unit/auth/test_databases.py.)"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.testing import missing_peer, require_binary
from bastion.testing.peers.postgres import PgServer, PostgresUnavailable
from bastion.testing.peers.postgres_tls import psql_local, start_postgres_tls

sys.path.insert(0, str(Path(__file__).parent))
from harness import BIN, Env, User, free_port, start_proxy, stop, unique, wait_for  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


def _psql(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("psql"), "-X", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10", **(env or {})},
    )


@pytest.fixture
def pg(env: Env, tmp_path: Path) -> Iterator[PgServer]:
    """PostgreSQL with a server certificate from the cluster's db CA (bctl auth sign)."""
    require_binary("psql")
    out = tmp_path / "server"
    env.admin_ok(
        "auth", "sign", "--format=db", "--host=localhost", "--principals=127.0.0.1", f"--out={out}"
    )
    try:
        server = start_postgres_tls(
            tmp_path / "pg",
            Path(f"{out}.crt").read_text(),
            Path(f"{out}.key").read_text(),
            Path(f"{out}.cas").read_text(),
        )
    except PostgresUnavailable as exc:
        missing_peer(str(exc))
    try:
        psql_local(server, "create role alice_db login; create role other_db login")
        yield server
    finally:
        server.stop()


def _start_agent(env: Env, tmp: Path, name: str, db: str, pg_port: int) -> subprocess.Popen[bytes]:
    token = json.loads(env.admin_ok("tokens", "add", "--type=db", "--ttl=10m", "--format", "json"))[
        "token"
    ]
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\n"
        "db_service:\n"
        f"  agent_name: {name}\n"
        f"  proxy_server: {env.cluster.proxy}\n"
        f"  join_token: {token}\n"
        f"  ca_pin: {env.cluster.pin}\n"
        "  databases:\n"
        f"    - name: {db}\n"
        f"      uri: 127.0.0.1:{pg_port}\n"
        "      labels: {env: dbtest}\n"
        "      commands: [{name: tier, command: [echo, gold], period: 1m}]\n"
        "      tls: {server_name: localhost}\n"
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "--roles=db", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _through_a_standalone_proxy(
    env: Env, user: User, db: str, service_file: Path, tmp_path: Path
) -> None:
    def db_recordings() -> list[dict[str, object]]:
        got = env.bsh(user, "recordings", "ls", "--node", db, "--format", "json")
        assert got.returncode == 0, got.stderr
        return [r for r in json.loads(got.stdout) if r["kind"] == "db"]

    # The session through the cluster's own proxy, recorded there (counted first).
    (ours,) = wait_for(db_recordings, "the all-in-one proxy's db recording", timeout=30)
    standalone, addr = start_proxy(env, tmp_path)
    try:
        host, port = addr.rsplit(":", 1)

        def session() -> bool:  # once the agent's tunnel reached the new proxy
            conninfo = f"service=bastion-{db} host={host} port={port}"
            got = _psql(conninfo, "-Atc", "select 'standalone'",
                        env={"PGSERVICEFILE": str(service_file)})  # fmt: skip
            return got.returncode == 0 and got.stdout.strip() == "standalone"

        wait_for(session, "a db session through the standalone proxy", timeout=60)
        both = wait_for(
            lambda: [r for r in db_recordings() if r["session_id"] != ours["session_id"]],
            "the standalone proxy's db recording uploaded to auth",
            timeout=60,
        )
        assert both[0]["user"] == user.name and both[0]["login"] == "alice_db"
    finally:
        stop(standalone)


def test_db_agent_from_config_and_bsh_db_commands(env: Env, pg: PgServer, tmp_path: Path) -> None:
    db, role = unique("pg"), unique("dbrole")
    env.admin_ok(
        "create",
        "-f",
        "-",
        input=(
            f"kind: role\nmetadata: {{name: {role}}}\nspec:\n  allow:\n"
            # tier: a dynamic label, the agent's command's output
            "    db_labels: {env: dbtest, tier: gold}\n    db_users: [alice_db]\n"
            "    db_names: [postgres]\n"
        ),
    )
    agent = _start_agent(env, tmp_path, unique("dbagent"), db, pg.port)
    try:
        # Sign up through the proxy's port (bsh db login writes that address for psql).
        user, invite = env.add_user(role)
        via_proxy = Env(dataclasses.replace(env.cluster, addr=env.cluster.proxy), env.root)
        signed_up = via_proxy.accept_invite(user, invite["token"])
        assert signed_up.returncode == 0, signed_up.stderr

        # bsh db ls: the heartbeated database, RBAC-filtered; bctl get db for the admin.
        def listed() -> list[dict[str, object]]:
            got = env.bsh(user, "db", "ls", "env=dbtest", "--format", "json")
            assert got.returncode == 0, got.stderr
            return [d for d in json.loads(got.stdout) if d["name"] == db]

        (info,) = wait_for(listed, "the agent's database in bsh db ls", timeout=30)
        assert info["online"] and info["db_users"] == ["alice_db"], info
        assert info["labels"] == {"env": "dbtest", "tier": "gold"}, info
        got = json.loads(env.admin_ok("get", f"db/{db}", "--format", "json"))
        assert got["spec"]["uri"] == f"127.0.0.1:{pg.port}"
        assert got["spec"]["dynamic_labels"]["tier"]["result"] == "gold"

        # bsh db login + psql "service=bastion-NAME": through the proxy's one port.
        done = env.bsh(user, "db", "login", db, "--db-user", "alice_db", "--db-name", "postgres")
        assert done.returncode == 0, done.stderr
        service_file = next(user.home.rglob("pg_service.conf"))
        psql = _psql(f"service=bastion-{db}", "-Atc", "select current_user",
                     env={"PGSERVICEFILE": str(service_file)})  # fmt: skip
        assert psql.returncode == 0, psql.stderr
        assert psql.stdout.strip() == "alice_db"

        # A proxy in its own process (proxy role only): the agent follows it; its db route
        # audits through auth's API and records the session, uploaded to auth like a node's.
        _through_a_standalone_proxy(env, user, db, service_file, tmp_path)

        # bsh db env: the exports for plain psql.
        exports = env.bsh(user, "db", "env", db)
        assert exports.returncode == 0, exports.stderr
        assert f"PGSERVICE=bastion-{db}" in exports.stdout and "PGSERVICEFILE=" in exports.stdout

        # bsh db connect: runs psql with the service entry (arguments after -- go to psql).
        run = env.bsh(user, "db", "connect", db, "--", "-Atc", "select 40 + 2")
        assert run.returncode == 0 and run.stdout.strip() == "42", run.stderr

        # bsh proxy db: a local listener for clients without certificates.
        port = free_port()
        proxy = subprocess.Popen(
            [str(BIN / "bsh"), "proxy", "db", db, "--port", str(port)],
            env={**os.environ, "BSH_HOME": str(user.home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert proxy.stderr is not None
            assert "listening" in proxy.stderr.readline().decode()
            local = _psql(
                f"host=127.0.0.1 port={port} user=alice_db dbname=postgres sslmode=disable",
                "-Atc",
                "select count(*) from pg_stat_ssl where ssl",
            )
            assert local.returncode == 0, local.stderr
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)

        # Another db user than the role allows: one clean line.
        denied = env.bsh(user, "db", "connect", db, "--db-user", "other_db", "--", "-c", "select 1")
        assert denied.returncode != 0 and "denied" in denied.stderr, denied.stderr
        assert "Traceback" not in denied.stderr

        # bsh db logout: certificates and entries gone.
        out = env.bsh(user, "db", "logout")
        assert out.returncode == 0 and db in out.stdout, out.stderr
        assert f"[bastion-{db}]" not in service_file.read_text()
    finally:
        stop(agent)
