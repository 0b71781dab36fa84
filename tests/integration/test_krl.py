"""Locks reach agentless OpenSSH nodes through the cluster KRL (issue 6, item 5).

Real processes only: the session's ``bastion start`` daemon, a user logged in with ``bsh``, a
stock ``sshd`` trusting the cluster user CA with ``RevokedKeys`` on the synced file, ``bbot join``
+ ``bbot krl-sync --once`` with the joined host identity, and ``bctl`` for locks and the KRL.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import Env, run, unique

from bastion.agent.krl_sync import load_trusted_keys
from bastion.ca.krl import parse_krl, verify_krl_signature
from bastion.ca.sshcert import parse_ssh_certificate
from bastion.testing import missing_peer
from bastion.testing.peers.sshd import (
    SshdServer,
    SshdUnavailable,
    find_ssh_binary,
    find_sshd,
    local_login,
    start_sshd,
)

pytestmark = pytest.mark.integration
LOGIN = local_login()


@pytest.fixture(autouse=True)
def _require_openssh() -> None:
    try:
        find_sshd()
        for tool in ("ssh", "ssh-keygen"):
            find_ssh_binary(tool)
    except SshdUnavailable as exc:
        missing_peer(str(exc))


def _ssh(sshd: SshdServer, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-i", str(key), "-o", f"CertificateFile={key}-cert.pub",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-p", str(sshd.port), f"{LOGIN}@{sshd.host}", "echo", "in",
        ],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _join(env: Env, tmp_path: Path) -> Path:
    token = json.loads(env.admin_ok("tokens", "add", "--type=node", "--format", "json"))
    dest = tmp_path / "identity"
    done = run(
        "bbot", "join", f"--auth={env.cluster.addr}", f"--token={token['token']}",
        f"--ca-pin={env.cluster.pin}", f"--name={unique('krl')}", f"--dest={dest}",
        home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dest


def _sync(identity: Path, krl: Path, status: Path, tmp_path: Path) -> dict[str, object]:
    done = run(
        "bbot", "krl-sync", f"--identity={identity}", f"--out={krl}", f"--status={status}",
        "--once", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(status.read_text())
    assert result["ok"] is True and result["stale"] is False, result
    return result


def test_lock_revokes_certificate_on_stock_sshd(env: Env, tmp_path: Path) -> None:
    user = env.new_user("access", LOGIN)
    key = next(user.home.rglob("key-cert.pub")).with_name("key")
    cert = parse_ssh_certificate((key.parent / "key-cert.pub").read_text())
    assert cert.key_id == user.name
    identity = _join(env, tmp_path)
    krl, status = tmp_path / "bastion_krl", tmp_path / "krl-status.json"
    sshd = start_sshd(
        tmp_path,
        trusted_user_ca=env.admin_ok("auth", "export", "--type=user"),
        extra={"RevokedKeys": str(krl)},
    )
    try:
        # No KRL yet: OpenSSH fails closed on an unreadable RevokedKeys file.
        assert _ssh(sshd, key).returncode == 255
        first = _sync(identity, krl, status, tmp_path)
        done = _ssh(sshd, key)
        assert done.returncode == 0 and done.stdout.strip() == "in", done.stderr

        lock_name = unique("lock")
        lock = {
            "kind": "lock",
            "metadata": {"name": lock_name},
            "spec": {"target": {"user": user.name}, "message": "laptop stolen"},
        }
        env.admin_ok("create", "-f", "-", input=json.dumps(lock))
        locked = _sync(identity, krl, status, tmp_path)
        assert int(str(locked["version"])) > int(str(first["version"]))
        parsed = parse_krl(krl.read_bytes())
        assert parsed.is_revoked(cert)
        refused = _ssh(sshd, key)
        assert refused.returncode == 255 and "in" not in refused.stdout
        assert "revoked" in sshd.output().lower()

        # bctl auth krl shows the same revocation and a signature the node trusts
        out = tmp_path / "krl-copy"
        shown = env.admin_ok("auth", "krl", f"--out={out}")
        assert user.name in shown and f"wrote {out}" in shown
        trusted = load_trusted_keys((identity / "user_ca.pub").read_text())
        verify_krl_signature(out.read_bytes(), Path(f"{out}.sig").read_text(), trusted)

        env.admin_ok("rm", f"lock/{lock_name}")
        _sync(identity, krl, status, tmp_path)
        assert not parse_krl(krl.read_bytes()).is_revoked(cert)
        done = _ssh(sshd, key)
        assert done.returncode == 0 and done.stdout.strip() == "in", done.stderr
    finally:
        sshd.stop()


def test_failed_sync_keeps_last_krl_and_reports_it(env: Env, tmp_path: Path) -> None:
    identity = _join(env, tmp_path)
    krl, status = tmp_path / "bastion_krl", tmp_path / "krl-status.json"
    good = _sync(identity, krl, status, tmp_path)
    before = krl.read_bytes()
    # A node that does not trust the signer must refuse the KRL and keep the old one.
    foreign = tmp_path / "foreign_ca.pub"
    foreign.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n"
    )
    done = run(
        "bbot", "krl-sync", f"--identity={identity}", f"--out={krl}", f"--status={status}",
        f"--trusted-ca={foreign}", "--once", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    failed = json.loads(status.read_text())
    assert failed["ok"] is False and "not a trusted user CA key" in failed["last_error"]
    assert failed["version"] == good["version"] and krl.read_bytes() == before
    assert "krl sync failed" in done.stderr
