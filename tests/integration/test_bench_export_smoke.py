"""Keeps ``bench/export/run.py`` working: a ``--quick`` run measures every path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "export" / "run.py"


def test_quick_run_reports_every_path() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["events"] == 1000
    assert set(report["paths"]) == {
        "direct file write (floor)",
        "forwarder -> JSON-lines file",
        "forwarder -> HEC (HTTP)",
        "forwarder -> _bulk (HTTP)",
    }
    assert all(row["events_per_s"] > 0 for row in report["paths"].values())
