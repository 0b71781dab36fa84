"""Interop: bastion.ca.sshcert against the real ``ssh-keygen`` (both directions).

Subprocesses of real binaries belong here; the pure tests of the module are in
tests/unit/ca/test_sshcert.py."""

from __future__ import annotations

import functools
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.ca.keys import PrivateKey, generate_private_key
from bastion.ca.sshcert import (
    DEFAULT_USER_EXTENSIONS,
    parse_ssh_certificate,
    sign_ssh_certificate,
    ssh_user_certificate,
    to_openssh_line,
    verify_ssh_certificate,
)
from bastion.errors import AccessDenied
from bastion.testing import require_binary
from bastion.types.authority import KeyAlgorithm
from bastion.types.identity import SSH_IDENTITY_EXTENSION, Identity

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
START = datetime(2026, 1, 1, tzinfo=UTC)


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    """Keys are expensive (RSA): one per (algorithm, role) per test session."""
    return generate_private_key(algorithm)


def make_identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "cluster": "example",
        "user": "alice",
        "roles": ("dev", "ops"),
        "traits": {"team": ("blue",)},
        "logins": ("alice", "root"),
        "expires": START + timedelta(hours=12),
        "device_id": "dev-1",
        "mfa_verified": True,
    }
    fields.update(overrides)
    return Identity.model_validate(fields)


def user_cert(ca: PrivateKey, subject: PrivateKey, identity: Identity | None = None) -> bytes:
    return ssh_user_certificate(
        ca, subject.public_key(), identity or make_identity(), serial=7, valid_after=START
    )


# --- round trips --------------------------------------------------------------------------------


# --- refusals -----------------------------------------------------------------------------------


# --- parser robustness --------------------------------------------------------------------------


# --- interop with OpenSSH and asyncssh ----------------------------------------------------------


def _write_private(path: Path, private: PrivateKey) -> None:
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
def test_ssh_keygen_reads_our_certificates(ca_alg: KeyAlgorithm, tmp_path: Path) -> None:
    ssh_keygen = require_binary("ssh-keygen")
    blob = user_cert(
        key(ca_alg, "ca"), key("ed25519", "subject"), make_identity(pinned_ip="192.0.2.1")
    )
    path = tmp_path / "user-cert.pub"
    path.write_text(to_openssh_line(blob, "alice") + "\n")
    result = subprocess.run(
        [ssh_keygen, "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    out = result.stdout
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in out
    assert 'Key ID: "alice"' in out
    assert "Serial: 7" in out
    assert "Valid: from 2026-01-01T00:00:00 to 2026-01-01T12:00:00" in out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["alice", "root"]
    assert "source-address 192.0.2.1" in out
    for name in [*DEFAULT_USER_EXTENSIONS, SSH_IDENTITY_EXTENSION]:
        assert name in out
    expected_sig = {"ed25519": "ssh-ed25519", "ecdsa-p256": "ecdsa-sha2-nistp256"}
    assert f"(using {expected_sig.get(ca_alg, 'rsa-sha2-512')})" in out


def _ssh_keygen_sign(tmp_path: Path, ca_alg: KeyAlgorithm) -> tuple[PrivateKey, bytes]:
    ssh_keygen = require_binary("ssh-keygen")
    ca = key(ca_alg, "ca")
    _write_private(tmp_path / "ca", ca)
    subject = key("ecdsa-p256", "subject").public_key()
    (tmp_path / "user.pub").write_text(
        subject.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        + "\n"
    )
    subprocess.run(
        [
            ssh_keygen,
            "-q",
            "-s",
            str(tmp_path / "ca"),
            "-I",
            "ci-bot@example",
            "-n",
            "deploy,root",
            "-V",
            "20260101000000:20260102000000",
            "-z",
            "123456789",
            "-O",
            "clear",
            "-O",
            "extension:permit-pty",
            "-O",
            "extension:team@bastion.dev=blue",
            "-O",
            "critical:force-command=/usr/bin/uptime",
            "-O",
            "source-address=10.0.0.0/8",
            str(tmp_path / "user.pub"),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        env={**os.environ, "TZ": "UTC"},
    )
    return ca, (tmp_path / "user-cert.pub").read_bytes()


def test_byte_identical_to_ssh_keygen(tmp_path: Path) -> None:
    ca, line = _ssh_keygen_sign(tmp_path, "ed25519")
    theirs = parse_ssh_certificate(line)
    assert theirs.key_id == "ci-bot@example"
    assert theirs.principals == ("deploy", "root")
    assert theirs.serial == 123456789
    assert theirs.valid_after == int(START.timestamp())
    assert theirs.critical_options == {
        "force-command": "/usr/bin/uptime",
        "source-address": "10.0.0.0/8",
    }
    assert theirs.extensions == {"permit-pty": "", "team@bastion.dev": "blue"}
    ours = sign_ssh_certificate(
        ca,
        theirs.public_key,
        cert_type=theirs.cert_type,
        serial=theirs.serial,
        key_id=theirs.key_id,
        principals=theirs.principals,
        valid_after=theirs.valid_after,
        valid_before=theirs.valid_before,
        critical_options=theirs.critical_options,
        extensions=theirs.extensions,
        nonce=theirs.nonce,
    )
    assert ours == theirs.blob


@pytest.mark.parametrize("ca_alg", ALGORITHMS)
def test_we_verify_ssh_keygen_certificates(ca_alg: KeyAlgorithm, tmp_path: Path) -> None:
    ca, line = _ssh_keygen_sign(tmp_path, ca_alg)
    cert = parse_ssh_certificate(line)
    verify_ssh_certificate(
        cert,
        [ca.public_key()],
        START + timedelta(hours=1),
        cert_type="user",
        principal="deploy",
        client_address="10.1.2.3",
    )
    with pytest.raises(AccessDenied, match="expired"):
        verify_ssh_certificate(cert, [ca.public_key()], START + timedelta(days=1), cert_type="user")
