"""Keeps ``bench/agent_events.py`` working: one ``--quick`` run. No timing asserts: the numbers
only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "agent_events.py"


def test_agent_events_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())["agent_events"]
    assert set(data) == {"sequential", "concurrent", "batches of 64"}
    for row in data.values():
        assert row["memory_per_s"] > 0 and row["spool_per_s"] > 0 and row["events"] > 0
    assert "spool/memory" in result.stdout
