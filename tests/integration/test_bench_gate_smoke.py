"""Keeps ``bench/gate.py`` and ``bench/changes.py`` working: one ``--quick`` run each must take
every measurement and print its ratios. No timing asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench"


def _quick(name: str, tmp_path: Path) -> tuple[str, dict[str, float]]:
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_gate_bench_quick(tmp_path: Path) -> None:
    text, results = _quick("gate", tmp_path)
    assert set(results) == {
        "bare aiohttp",
        "public route",
        "gated route",
        "gate alone, 0 locks",
        "gate alone, 100 locks",
        "gate alone, 100 locks, watcher",
    }
    assert all(value > 0 for value in results.values())
    assert "vs bare aiohttp" in text and "the gate costs" in text


def test_changes_bench_quick(tmp_path: Path) -> None:
    text, results = _quick("changes", tmp_path)
    for callers in ("1 caller(s)", "64 caller(s)"):
        for path in ("plain write", "two steps", "audited change"):
            assert results[f"{path}, {callers}"] > 0
    assert "vs plain write" in text
