"""Keeps ``bench/session_mfa/run.py`` working: one ``--quick`` run (3 rounds) must set up the
cluster and the user with a software key and report the five timings. No timing asserts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "session_mfa" / "run.py"


def test_session_mfa_bench_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 rounds" in done.stdout
    for name in ("plain", "checked", "mfa", "ask", "ceremony"):
        assert any(line.startswith(name + " ") for line in done.stdout.splitlines()), done.stdout
    # the ceremony really ran: the solver was asked three times (once per mfa round)
    assert done.stderr.count("per-session MFA: touch your security key") == 3, done.stderr
