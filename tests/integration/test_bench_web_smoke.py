"""Keeps ``bench/web.py`` working: a quick run must measure the keystroke echo and bulk output of
the web terminal and ``bsh ssh``, and the resources page. No timing asserts: the numbers only
have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium_browser

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "web.py"


def test_web_bench_runs() -> None:
    with chromium_browser(web_assets=True):  # fails under CI when Chromium or npm assets miss
        pass
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["web"]["echo_p50_ms"] > 0 and result["bsh ssh"]["echo_p50_ms"] > 0
    assert result["bulk_ratio_web_over_bsh"] > 0
    assert result["resources_page"]["first_paint_s"] > 0
