"""Keeps ``bench/ssh/run.py`` working: one ``--quick`` run with the smallest sizes (one timed run
per path, 2 MiB piped, 4 idle sessions) must take every measurement on every path. No timing
asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import (
    SshdUnavailable,
    find_ssh_binary,
    find_sshd,
)

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "ssh" / "run.py"
PATHS = {
    "openssh direct",
    "openssh ProxyJump",
    "ssh+bsh -> agentless",
    "bsh ssh -> agentless",
    "ssh+bsh -> built-in",
    "bsh ssh -> built-in",
}


def test_ssh_bench_quick(tmp_path: Path) -> None:
    try:
        find_sshd()
        find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--runs=1",
            f"--bytes={2 * 2**20}",
            "--sessions=4",
            "--json",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Targets (issue 4)" in done.stdout
    result = json.loads(out.read_text())
    assert result["skipped"] == []
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == PATHS
    for row in rows.values():
        assert row["connect_ms"] > 0 and row["mbps"] > 0, row
    assert result["memory"]["sessions"] == 4
    assert result["memory"]["after_kib"] > 0
