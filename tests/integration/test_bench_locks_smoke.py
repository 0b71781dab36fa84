"""Keeps ``bench/locks/run.py`` working: one tiny ``--quick`` run (8 sessions of 2 users, 2
rounds: each user is locked once while the other's sessions must survive) must set up the
cluster, open every session, lock and unlock each round's user and report. No timing asserts:
the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "locks" / "run.py"


def test_lock_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--sessions=8",
            "--users=2",
            "--rounds=2",
            "--json",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    # 0: every round closed its sessions; 1: some round missed (locks did not cut them).
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    assert "Target (issue 6)" in done.stdout
    result = json.loads(out.read_text())
    assert result["error"] == ""
    assert result["sessions"] == 8 and result["users"] == 2
    assert len(result["rounds"]) == 2
    for r in result["rounds"]:
        assert r["sessions"] == 4, r
        assert r["collateral"] == 0, r  # a lock never cuts another user's sessions
        assert r["reopen"] is not None, r  # removing the lock restores access
