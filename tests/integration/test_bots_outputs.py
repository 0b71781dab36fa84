"""``bbot start``'s database output (issue 18): the bot's certificate routed to a database and a
``pg_service.conf`` entry, as ``bsh db login`` writes them; real ``psql`` through the proxy's
port reaches real PostgreSQL behind a database agent on a reverse tunnel as the bot's db user.
The join token was single use: a second ``bbot start --oneshot`` with it is one clear line.
(The app output shares the code; its files are unit-tested in tests/unit/cli/test_bbot_start.py.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import BIN, Env, stop, unique, wait_for
from test_db_agent import _psql, _start_agent, pg  # noqa: F401 (pg: the PostgreSQL fixture)

from bastion.testing.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


def test_bbot_database_output_reaches_postgres(env: Env, pg: PgServer, tmp_path: Path) -> None:  # noqa: F811
    db, role = unique("pg"), unique("botdb")
    env.admin_ok(
        "create", "-f", "-",
        input=(
            f"kind: role\nmetadata: {{name: {role}}}\nspec:\n  allow:\n"
            "    db_labels: {env: dbtest}\n    db_users: [alice_db]\n    db_names: [postgres]\n"
        ),
    )  # fmt: skip
    agent = _start_agent(env, tmp_path, unique("dbagent"), db, pg.port)
    try:
        name = unique("bot")
        added = json.loads(env.admin_ok("bots", "add", name, f"--roles={role}", "--format=json"))
        dest = tmp_path / "bot"
        done = subprocess.run(
            [str(BIN / "bbot"), "start", "--oneshot", f"--proxy={env.cluster.proxy}",
             f"--ca-pin={env.cluster.pin}", f"--token={added['token']}", f"--dest={dest}",
             f"--database={db}:alice_db:postgres", "--ttl=10m"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = dest / f"db-{db}"
        assert out.is_symlink() and {p.name for p in out.iterdir()} == {
            f"{db}.crt",
            f"{db}.key",
            f"{db}.ca",
            "pg_service.conf",
        }
        service = out / "pg_service.conf"
        assert f"[bastion-{db}]" in service.read_text()

        def connected() -> str:
            ran = _psql(f"service=bastion-{db}", "-Atc", "select current_user",
                        env={"PGSERVICEFILE": str(service)})  # fmt: skip
            return ran.stdout.strip() if ran.returncode == 0 else ""

        assert wait_for(connected, "psql through the bot's output", timeout=30) == "alice_db"
        assert (dest / "x509" / "tls.crt").read_text().startswith("-----BEGIN CERTIFICATE")

        again = subprocess.run(
            [str(BIN / "bbot"), "start", "--oneshot", f"--proxy={env.cluster.proxy}",
             f"--ca-pin={env.cluster.pin}", f"--token={added['token']}",
             f"--dest={tmp_path / 'again'}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert again.returncode != 0 and "already used" in again.stderr, again.stderr
        assert "Traceback" not in again.stderr
    finally:
        stop(agent)
