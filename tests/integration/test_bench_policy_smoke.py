"""Keeps ``bench/policy.py`` working: one ``--quick`` run must time plain and conditional
checks, ``who`` and ``ls``, and report. No timing asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "policy.py"


def test_policy_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Target (issue 19)" in done.stdout
    result = json.loads(out.read_text())
    assert result["nodes"] == 1_000 and result["roles"] == 20
    for key in ("plain", "where_per_connection", "where_one_sweep", "who_one_node"):
        assert result[key]["median_us"] > 0
    assert result["ls_pairs"] > 0 and result["who_grants"] > 0
