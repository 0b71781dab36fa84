"""Keeps ``bench/db.py`` working: one ``--quick`` run must take every measurement and print its
ratios. No timing asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.testing import missing_peer

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]

BENCH = Path(__file__).parents[2] / "bench"


def test_db_bench_quick(tmp_path: Path) -> None:
    for binary in ("pgbench", "psql"):
        if shutil.which(binary) is None:
            missing_peer(f"{binary} is not installed (Debian package postgresql-client)")
    out = tmp_path / "db.json"
    done = subprocess.run(
        # The agent in its own process (as on the database's host; the in-process agents of
        # the other topologies are the integration tests' rig).
        [sys.executable, str(BENCH / "db.py"), "--quick", "--agent-process", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["direct_tps"] > 0 and result["ours_tps"] > 0
    assert result["bsh_tps"] > 0 and len(result["pg_rounds"]) == 1  # --quick: one round
    assert result["ours_connect_ms"] > 0 and "ratio ours/direct" in done.stdout
    assert result["agent_cpu_us_per_txn"] > 0 and "in the agent's process" in done.stdout
    if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists():
        assert result["relay_tps"] > 0  # HAProxy as a plain TCP relay, the hop's own cost
    # The floor: a Python relay terminating TLS on both legs, no parsing, no audit.
    assert result["floor_tps"] > 0 and result["floor_cpu_us_per_txn"] > 0
    assert "py floor" in done.stdout
    c_floor = shutil.which("cc") is not None  # make test installs gcc and libssl-dev
    if c_floor:  # the same relay in C on OpenSSL (bench/tls_floor.c, built by the bench)
        assert result["cfloor_tps"] > 0 and result["cfloor_cpu_us_per_txn"] > 0
        assert "c floor" in done.stdout
    if shutil.which("mariadb-slap") and shutil.which("mariadbd"):
        # bsh proxy db's MySQL listener runs in its own process on bsh's loop (uvloop).
        assert result["mysql_ours_qps"] > 0 and result["mysql_port_qps"] > 0
        assert result["mysql_agent_cpu_us_per_query"] > 0
        assert result["mysql_floor_qps"] > 0
        assert not c_floor or result["mysql_cfloor_qps"] > 0
        # MariaDB Connector/Python's executemany (COM_STMT_BULK_EXECUTE), every row audited.
        assert result["bulk_direct_rows_per_s"] > 0 and result["bulk_audited_rows_per_s"] > 0
        assert "bulk insert" in done.stdout
        # mariadb-slap --compress: the proxy's compressed protocol, direct and ours.
        assert result["zip_direct_qps"] > 0 and result["zip_port_qps"] > 0
        assert "compressed answers" in done.stdout
