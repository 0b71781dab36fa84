"""Keeps ``bench/bots.py`` working: one ``--quick`` run on SQLite prints every path. No timing
asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench"


def test_bots_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bots.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "bots.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["sqlite"]
    assert {k.split(",")[0] for k in results} == {"issuance only (floor)", "renewal", "add+join"}
    assert "renewals/s" in done.stdout
