"""Bots end to end (issue 18): ``bctl bots add``, ``bbot start`` renewing with short real TTLs,
OpenSSH ``ssh -F`` through its output, and a copied identity locking the bot (which also ends
the bot's live SSH session). A spent join token: tests/integration/test_bots_outputs.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import BIN, Env, stop, unique, wait_for

from bastion.testing import missing_peer
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary, local_login

pytestmark = pytest.mark.integration

LOGIN = local_login()


def _state(dest: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((dest / "state" / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def _config(env: Env, path: Path, dest: Path, token: str) -> Path:
    path.write_text(
        f"proxy: {env.cluster.proxy}\n"
        f"ca_pin: {env.cluster.pin}\n"
        f"dest: {dest}\n"
        + (f"token: {token}\n" if token else "")
        + "ttl: 1m\n"
        + "renew_at: 0.97\n"  # renew about every 2 s: short real TTLs
        + "jitter: 0\n"
    )
    return path


def _ssh(cfg: Path, dest: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(cfg), "-o", "ConnectTimeout=20", dest, *cmd],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def test_bbot_renews_serves_openssh_and_a_copy_locks_it(env: Env, tmp_path: Path) -> None:
    try:
        find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    name = unique("bot")
    added = json.loads(
        env.admin_ok("bots", "add", name, "--roles=access", f"--logins={LOGIN}", "--format=json")
    )
    assert added["bot"]["user"] == f"bot-{name}" and added["token"]
    listed = json.loads(env.admin_ok("bots", "ls", "--format=json"))
    assert name in [b["name"] for b in listed]
    dest = tmp_path / "out"
    cfg = _config(env, tmp_path / "bbot.yaml", dest, added["token"])
    log = (tmp_path / "bbot.log").open("wb")
    daemon = subprocess.Popen(
        [str(BIN / "bbot"), "start", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT
    )
    session: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: _state(dest).get("generation", 0) >= 3, "two renewals", timeout=30)
        for sub in ("state", "identity", "ssh", "x509"):
            assert (dest / sub).is_symlink()
        modes = {p.stat().st_mode & 0o777 for p in (dest / "ssh").resolve().iterdir()}
        assert modes == {0o600}
        host = f"{LOGIN}@{socket.gethostname()}.{env.cluster.cluster}"
        ssh_config = dest / "ssh" / "ssh_config"
        done = _ssh(ssh_config, host, "echo", "bot-ok")
        assert done.returncode == 0 and "bot-ok" in done.stdout, done.stderr
        # bsh with the identity output as its home
        ran = env.bsh(dest / "identity", "ls", "--format", "json")
        assert ran.returncode == 0, ran.stderr

        # A live session of the bot, then a copy of its identity renews after the original.
        session = subprocess.Popen(
            ["ssh", "-F", str(ssh_config), host, "echo started; sleep 60; echo done"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert session.stdout is not None
        started = session.stdout.readline().strip()
        assert started == "started", session.communicate(timeout=10)[1]
        clone = tmp_path / "clone"
        clone.mkdir()
        shutil.copytree(dest / "state", clone / "state")
        copied_at = json.loads((clone / "state" / "state.json").read_text())["generation"]
        wait_for(lambda: _state(dest).get("generation", 0) > copied_at, "the original to renew")
        clone_cfg = _config(env, tmp_path / "clone.yaml", clone, "")
        refused = subprocess.run(
            [str(BIN / "bbot"), "start", "-c", str(clone_cfg), "--oneshot"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        assert "copied" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        out, _ = session.communicate(timeout=20)  # the lock ends the live session
        assert "done" not in out
        events = env.events("--type", "bot.generation_mismatch")
        assert any(e.get("target") == f"bot/{name}" for e in events), events
        daemon.wait(timeout=20)  # the original is locked too: its next renewal is refused
        assert daemon.returncode != 0
        refused_ssh = _ssh(ssh_config, host, "echo", "no")
        assert refused_ssh.returncode != 0
    finally:
        if session is not None and session.poll() is None:
            session.kill()
        stop(daemon)
        for lock in json.loads(env.admin_ok("locks", "ls", "--format", "json")):
            if lock["spec"]["target"].get("bot") == name:
                env.admin_ok("rm", f"lock/{lock['metadata']['name']}")
    env.admin_ok("bots", "rm", name)
    assert name not in [b["name"] for b in json.loads(env.admin_ok("bots", "ls", "--format=json"))]
