"""Keeps ``bench/tls_memory.py`` working: one ``--quick`` run must measure every loop
configuration. No timing or memory asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "tls_memory.py"


def test_tls_memory_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "tls.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio uvloop tuned / asyncio tuned" in done.stdout
    results = json.loads(out.read_text())
    for config in ("asyncio", "asyncio tuned", "uvloop", "uvloop tuned"):
        assert set(results[config]) == {"kib_per_idle_connection", "cpu_us_per_round_trip"}
