"""Keeps ``bench/cli.py`` working: one ``--quick`` run must take every measurement. No timing
asserts: the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary, find_sshd

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "cli.py"


def test_cli_bench_quick(tmp_path: Path) -> None:
    try:
        find_sshd()
        find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Targets (issue 12)" in done.stdout
    result = json.loads(out.read_text())
    assert result["skipped"] == []
    assert {"python -c pass", "ssh -V", "bsh --help", "bsh status", "bsh ls"} <= set(
        result["startup_ms"]
    )
    assert set(result["connect_ms"]) == {"openssh ProxyJump true", "ssh+bsh true", "bsh ssh true"}
    assert all(v > 0 for v in [*result["connect_ms"].values(), *result["mbps"].values()])
