"""Two auth servers on one PostgreSQL backend share one cluster state (the HA set-up)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from harness import Cluster, run, start_cluster

from bastion.testing.peers.postgres import PgServer, create_database

pytestmark = pytest.mark.needs_postgres


def test_two_auth_servers_share_state(postgres_server: PgServer, tmp_path: Path) -> None:
    dsn = asyncio.run(create_database(postgres_server))
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"storage:\n  type: postgres\n  dsn: {dsn}\nauth_service:\n  kek_file: {tmp_path / 'kek'}\n"
        "ssh_service:\n  enabled: false\n"  # two nodes named after this host would collide
    )
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    clusters: list[Cluster] = []
    try:
        a = start_cluster(a_dir, "-c", str(config), name="ha.local")
        clusters.append(a)
        b = start_cluster(b_dir, "-c", str(config), name="ha.local")
        clusters.append(b)
        assert a.pin == b.pin  # one cluster, one host CA
        home = tmp_path / "home"
        added = run(
            "bctl",
            "--data-dir",
            str(a.data_dir),
            "users",
            "add",
            "hauser",
            "--roles=access",
            "--logins=hauser",
            "--format",
            "json",
            home=home,
        )
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["user"] == "hauser"
        listed = run(
            "bctl", "--data-dir", str(b.data_dir), "get", "users", "--format", "json", home=home
        )
        assert listed.returncode == 0, listed.stderr
        assert "hauser" in {u["metadata"]["name"] for u in json.loads(listed.stdout)}
        # a user's write on B is visible on A
        created = run(
            "bctl",
            "--data-dir",
            str(b.data_dir),
            "create",
            "-f",
            "-",
            home=home,
            input="kind: role\nmetadata: {name: ha-role}\nspec: {allow: {logins: [x]}}\n",
        )
        assert created.returncode == 0, created.stderr
        got = run("bctl", "--data-dir", str(a.data_dir), "get", "role/ha-role", home=home)
        assert got.returncode == 0 and "ha-role" in got.stdout
    finally:
        for c in clusters:
            c.stop()
