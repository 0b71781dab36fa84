"""Keeps ``bench/ha.py`` working: one tiny run (one fail-over round, 1 s throughput runs with two
clients) must take every measurement and print its ratio. No timing asserts: the numbers only
have to exist."""

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


def test_ha_bench_quick(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        missing_peer("haproxy is not installed (Debian package haproxy)")
    out = tmp_path / "ha.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "ha.py"),
            "--quick",
            "--rounds=1",
            "--seconds=1",
            "--concurrency=2",
            "--json",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {
        "connects/s, two proxies",
        "connects/s, one proxy",
        "failover p50 s",
        "failover p99 s",
    }
    assert all(value > 0 for value in results.values())
    assert "two vs one" in done.stdout and "p99" in done.stdout
