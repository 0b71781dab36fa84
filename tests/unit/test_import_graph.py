"""The package graph is a DAG (issue 22): tests/check_cycles.py, run under pytest too."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "check_cycles.py"


def test_no_import_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    check = runpy.run_path(str(CHECK))
    assert check["main"]() == 0, capsys.readouterr().out


def test_the_cycle_finder_finds_a_loop() -> None:
    check = runpy.run_path(str(CHECK))
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert check["strongly_connected"](graph) == [["a", "b", "c"]]
