"""Keeps ``bench/risk.py`` working: one ``--quick`` run prints every line. No timing asserts:
the numbers only have to exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench"


@pytest.mark.parametrize(
    ("script", "lines"),
    [
        ("risk.py", ["rules engine", "evaluator/append"]),
    ],
)
def test_bench_quick(script: str, lines: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in lines:
        assert line in done.stdout, done.stdout
