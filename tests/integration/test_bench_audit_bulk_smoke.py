"""Keeps ``bench/audit_bulk.py`` working: one ``--quick`` run takes every measurement. No timing
asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "audit_bulk.py"


def test_audit_bulk_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--postgres", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    for name in ("emit", "emit_many", "append_many", "bulk"):
        assert data["floor"][name]["cpu_us_per_event"] > 0
        assert set(data[name]) == {"1", "8", "64"}
        for row in data[name].values():
            assert row["events_per_s"] > 0 and row["ratio_cpu_vs_floor"] > 0
            assert row["checkpoint_cpu_us_per_event"] > 0
    assert "ratio ours/floor CPU" in result.stdout
    pg = data["postgres"]
    assert pg["floor"]["events_per_s"] > 0 and pg["bulk_via_commit"]["events_per_s"] > 0
    assert set(pg["bulk"]) == {"1", "8", "64"}
    assert all(row["events_per_s"] > 0 for row in pg["bulk"].values())
    assert "bulk over PostgreSQL" in result.stdout
