"""Keeps ``bench/mfa.py`` working: one ``--quick`` run must verify assertions on both backends and
with the raw library, log every user in by every method, and print the ratios. No timing asserts:
the numbers only have to exist (the audit log must show each measured login)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "mfa.py"
METHODS = {"password+otp", "password+webauthn", "passwordless"}


def test_mfa_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "mfa.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for backend in ("memory", "sqlite"):
        assert f"cost ratio bastion ({backend}) / webauthn library:" in done.stdout
    assert done.stdout.count("ratio vs password+TOTP:") == 6, done.stdout
    data = json.loads(out.read_text())
    sizes = data["sizes"]
    per_contender = sizes["rounds"] * sizes["assertions"]
    assert data["assertion_counts"] == dict.fromkeys(
        ("memory", "sqlite", "webauthn"), per_contender
    )
    assert all(rate > 0 for rate in data["assertions_per_s"].values())
    per_method = sizes["rounds"] * sizes["logins"]
    for backend in ("memory", "sqlite"):
        assert set(data["logins_per_s"][backend]) == METHODS
        assert all(rate > 0 for rate in data["logins_per_s"][backend].values())
        assert data["audited_logins"][backend] == dict.fromkeys(METHODS, per_method)
    assert data["argon2_verify_per_s"] > 0
