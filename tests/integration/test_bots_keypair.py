"""The bound_keypair join method end to end (issue 18): ``bctl bots add --public-key``, then
``bbot start --join-method=bound_keypair`` signs auth's challenge at each join (no secret, not
single use); another key is refused with one clear line and a ``bot.join`` failure event."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import BIN, Env, unique

pytestmark = pytest.mark.integration


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bot", "-f", str(path)], check=True
    )
    return path


def _bbot(env: Env, name: str, key: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bbot"), "start", "--oneshot", f"--proxy={env.cluster.proxy}",
         f"--ca-pin={env.cluster.pin}", "--join-method=bound_keypair", f"--bot={name}",
         f"--keypair={key}", f"--dest={dest}", "--ttl=10m"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_bound_keypair_joins_each_time_and_refuses_another_key(env: Env, tmp_path: Path) -> None:
    key = _keygen(tmp_path / "bot_key")
    name = unique("kp")
    added = json.loads(
        env.admin_ok("bots", "add", name, "--roles=access", f"--public-key={key}.pub",
                     "--format=json")
    )  # fmt: skip
    assert added["join_method"] == "bound_keypair" and not added["token"]
    first = _bbot(env, name, key, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "a" / "x509" / "tls.crt").read_text().startswith("-----BEGIN")
    again = _bbot(env, name, key, tmp_path / "b")  # not single use: a second fresh join
    assert again.returncode == 0, again.stderr
    stranger = _bbot(env, name, _keygen(tmp_path / "other_key"), tmp_path / "c")
    assert stranger.returncode != 0
    assert "does not verify" in stranger.stderr and "Traceback" not in stranger.stderr
    events = env.events("--type", "bot.join")
    mine = [e for e in events if name in json.dumps(e)]
    assert sum(1 for e in mine if e.get("outcome") == "success") == 2
    assert any(e.get("outcome") == "failure" and "does not verify" in json.dumps(e) for e in mine)
