"""Keeps ``bench/recording.py`` working: a 1 MiB run must measure the bare stream, the
recorder and asciinema's writer (the peer). No timing asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.testing import missing_peer

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "recording.py"


def test_recording_bench_runs() -> None:
    if not Path("/usr/lib/python3/dist-packages/asciinema").is_dir():
        missing_peer("asciinema (Debian package) is not installed")
    done = subprocess.run(
        [sys.executable, str(BENCH), "1"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"bare", "bastion", "asciinema"} <= set(result)
    assert result["bastion"]["MB/s"] > 0 and result["ratio_bastion_over_asciinema"] > 0
