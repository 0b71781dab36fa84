"""Moderated database sessions (issue 17): ``require_session_join`` with ``kinds: [db]``.

End to end on the shared cluster (``bastion start``), a database agent, a real PostgreSQL and
real ``psql``: the session is held (no statement reaches the database; psql prints the proxy's
NOTICE naming who must join) until a moderator runs
``bsh join ID --mode=moderator``, who then sees the statements live; when the moderator leaves,
``on_leave: terminate`` ends the session. A proxy that cannot offer joins (the in-process rig's)
refuses such sessions with one clean 28000 line (fail closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.testing import missing_peer, require_binary
from bastion.testing.db_rig import DbRig, start_db_rig
from bastion.testing.peers.postgres import PgServer, PostgresUnavailable
from bastion.testing.peers.postgres_tls import psql_local, start_postgres_tls
from bastion.types.sessions import SessionRequirePolicy

sys.path.insert(0, str(Path(__file__).parent))
from harness import BIN, Env, User, login_via_proxy, stop, unique, wait_for  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


@pytest.fixture
def pg(env: Env, tmp_path: Path) -> Iterator[PgServer]:
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
        psql_local(server, "create role alice_db login")
        yield server
    finally:
        server.stop()


def _agent(env: Env, tmp: Path, db: str, label: str, pg_port: int) -> subprocess.Popen[bytes]:
    out = env.admin_ok("tokens", "add", "--type=db", "--ttl=10m", "--format", "json")
    name = unique("dbmodagent")
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\ndb_service:\n  agent_name: {name}\n"
        f"  proxy_server: {env.cluster.proxy}\n  join_token: {json.loads(out)['token']}\n"
        f"  ca_pin: {env.cluster.pin}\n  databases:\n    - name: {db}\n"
        f"      uri: 127.0.0.1:{pg_port}\n      labels: {{env: {label}}}\n"
        "      tls: {server_name: localhost}\n"
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "--roles=db", "-c", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _popen(user: User, *argv: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1", **env}
    return subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=full,
    )  # fmt: skip


def test_a_db_session_waits_for_a_moderator_who_sees_it_and_ends_it(
    env: Env, pg: PgServer, tmp_path: Path
) -> None:
    tag = unique("dm")
    db, owner_role, mod_role = f"pg-{tag}", f"dbowner-{tag}", f"dbmod-{tag}"
    search = f"dbsearch-{tag}"
    env.admin_ok("create", "-f", "-", input=f"""
kind: role
metadata: {{name: {owner_role}}}
spec:
  options:
    require_session_join: [{{name: dual, kinds: [db], modes: [moderator], on_leave: terminate}}]
  allow: {{db_labels: {{env: {tag}}}, db_users: [alice_db], db_names: [postgres]}}
---
kind: role
metadata: {{name: {mod_role}}}
spec:
  allow:
    join_sessions: [{{roles: [{owner_role}], kinds: [db], modes: [moderator, observer]}}]
    request: {{search_as_roles: [{search}]}}
---
kind: role
metadata: {{name: {search}}}
spec:
  allow: {{db_labels: {{env: {tag}}}, db_users: [alice_db], db_names: [postgres]}}
""")  # fmt: skip
    agent = _agent(env, tmp_path, db, tag, pg.port)
    try:
        alice, mod = env.new_user(owner_role), env.new_user(mod_role)
        for user in (alice, mod):
            login_via_proxy(env, user)

        def logged_in() -> bool:
            done = env.bsh(alice, "db", "login", db, "--db-user=alice_db", "--db-name=postgres")
            return done.returncode == 0

        wait_for(logged_in, "bsh db login to the agent's database", timeout=30)
        service = {"PGSERVICEFILE": str(next(alice.home.rglob("pg_service.conf")))}
        psql = [require_binary("psql"), "-X", f"service=bastion-{db}", "-At"]

        def pending() -> list[dict[str, Any]]:
            got = env.bsh(mod, "sessions", "ls", "--format", "json")
            assert got.returncode == 0, got.stderr
            return [s for s in json.loads(got.stdout) if s["owner"] == alice.name]

        # 1. Held until the moderator joins; the moderator sees the statement; it runs.
        held = _popen(alice, *psql, "-c", "select 'ran-' || 40 + 2", **service)
        (session,) = wait_for(pending, "the held db session in bsh sessions ls", timeout=30)
        assert session["state"] == "pending" and session["waiting_for"], session
        assert "moderator" in session["join_modes"]
        assert held.poll() is None  # still waiting: nothing reached the database
        join = _popen(mod, str(BIN / "bsh"), "join", session["id"], "--mode=moderator")
        out, err = held.communicate(timeout=30)
        assert held.returncode == 0 and out.strip() == "ran-42", err
        # psql printed the proxy's NoticeResponse (after authentication, before its query)
        assert "NOTICE:  this session waits for moderators to join" in err, err
        assert f"bsh join {session['id']} --mode=moderator" in err, err
        seen, _ = join.communicate(timeout=30)  # the session ended: bsh join returns
        assert "alice_db@postgres=> select 'ran-' || 40 + 2" in seen

        # 2. on_leave terminate: the moderator leaves, the session ends.
        long = _popen(alice, *psql, "-c", "select pg_sleep(60)", **service)
        (session,) = wait_for(pending, "the second held db session", timeout=30)
        join = _popen(mod, str(BIN / "bsh"), "join", session["id"], "--mode=moderator")
        wait_for(lambda: pending()[0]["state"] == "running", "the session running")
        join.send_signal(signal.SIGTERM)
        join.communicate(timeout=30)
        _, err = long.communicate(timeout=30)
        assert long.returncode != 0 and "Traceback" not in err
        events = env.events("--type", "session.leave")
        assert any(e.get("user") == mod.name for e in events)

        # 3. A resource request for this database (found through search_as_roles; its search
        #    role does not require moderation): refused before, reached once approved+assumed.
        erin = mod  # the moderator's own roles reach no database
        got = env.bsh(erin, "request", "create", f"--resource=db/{db}", "--reason=INC-7",
                      "--format", "json")  # fmt: skip
        assert got.returncode == 0, got.stderr
        rid = json.loads(got.stdout)["id"]
        login = ("db", "login", db, "--db-user=alice_db", "--db-name=postgres")
        assert env.bsh(erin, *login).returncode == 0
        erin_service = {"PGSERVICEFILE": str(next(erin.home.rglob("pg_service.conf")))}
        query = (*psql, "-c", "select 7")
        _, err = _popen(erin, *query, **erin_service).communicate(timeout=30)
        assert "denied" in err, err  # no standing access
        env.admin_ok("requests", "approve", rid, "--reason=ok")
        assumed = env.bsh(erin, "request", "assume", rid)
        assert assumed.returncode == 0, assumed.stderr
        assert env.bsh(erin, *login).returncode == 0
        ok = _popen(erin, *query, **erin_service)
        out, err = ok.communicate(timeout=30)
        assert ok.returncode == 0 and out.strip() == "7", err
    finally:
        stop(agent)


# ---- a proxy that cannot offer joins fails closed (the in-process rig) -------------------------


async def _psql(conninfo: str, sql: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"), conninfo, "-X", "-Atc", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DbRig]:
    require_binary("psql")
    try:
        async with start_db_rig(tmp_path) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


async def _moderate(rig: DbRig, kinds: list[str]) -> None:
    auth = rig.certs._auth
    role = await auth.roles.get("dba")
    policy = SessionRequirePolicy.model_validate(
        {"name": "dual", "filter": "", "kinds": kinds, "modes": ["moderator"], "count": 1}
    )
    options = role.spec.options.model_copy(update={"require_session_join": [policy]})
    await auth.roles.update(
        role.model_copy(update={"spec": role.spec.model_copy(update={"options": options})})
    )


async def test_without_joins_a_moderated_db_session_is_refused_cleanly(rig: DbRig) -> None:
    await _moderate(rig, ["ssh"])  # ssh only: databases are not moderated
    code, out, err = await _psql(await rig.login("alice_db", "alice"), "select 1")
    assert code == 0 and out.strip() == "1", err
    await _moderate(rig, ["db"])
    code, out, err = await _psql(await rig.login("alice_db", "alice2"), "select 1")
    assert code != 0 and out == ""
    assert 'database sessions of role "dba" must be moderated' in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    refusal = rig.audit.of("db.session.start")[-1]
    assert refusal["outcome"] == "failure" and "moderation" in refusal["reason"]
