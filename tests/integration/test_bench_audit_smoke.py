"""Keeps ``bench/audit/run.py`` working: one ``--quick`` run takes every measurement. No timing
asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "audit" / "run.py"


def test_audit_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["audit_log"]) == {"sequential", "concurrent", "batch"}
    for row in data["audit_log"].values():
        assert row["append_per_s"] > 0 and row["with_hashing_per_s"] > 0
    assert data["plain_create_per_s"]["sequential"] > 0
    assert data["verify"]["events"] == 2000 and data["verify"]["verify_s"] >= 0
    assert "ratio audit log with hashing / plain create" in result.stdout
