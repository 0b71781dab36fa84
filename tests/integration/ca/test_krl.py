"""Interop: bastion.ca.krl against the real ``ssh-keygen`` (queries, its KRLs, signatures).

Subprocesses of real binaries belong here; the pure tests of the module are in
tests/unit/ca/test_krl.py."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.ca.keys import PrivateKey, generate_private_key, public_key_to_openssh
from bastion.ca.krl import (
    build_krl,
    parse_krl,
    sign_krl,
    verify_krl_signature,
)
from bastion.ca.sshcert import (
    parse_ssh_certificate,
    sign_ssh_certificate,
    ssh_public_key_blob,
    to_openssh_line,
)
from bastion.testing import require_binary
from bastion.types.authority import KeyAlgorithm

START = datetime(2026, 1, 1, tzinfo=UTC)
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    return generate_private_key(algorithm)


def cert(ca: PrivateKey, key_id: str, serial: int, subject: PrivateKey | None = None) -> bytes:
    return sign_ssh_certificate(
        ca,
        (subject or key("ed25519", "subject")).public_key(),
        cert_type="user",
        serial=serial,
        key_id=key_id,
        principals=["alice"],
        valid_after=START,
        valid_before=START + timedelta(days=3650),
    )


def sample(ca: PrivateKey, **kw: object) -> bytes:
    args: dict[str, object] = {
        "key_ids": ["mallory", "eve"],
        "serials": [42, 7, 2**64 - 1],
        "version": 1_700_000_000_123,
        "generated": 1_700_000_000,
        "comment": "bastion test",
    }
    args.update(kw)
    return build_krl([ca.public_key()], **args)  # type: ignore[arg-type]


# --- round trips and revocation decisions ----------------------------------------------------


# --- embedded (legacy) and detached signatures -------------------------------------------------


# --- garbage in: only RemoteProtocolError ----------------------------------------------------


# --- interop with OpenSSH ---------------------------------------------------------------------


def _write_key(path: Path, private: PrivateKey) -> Path:
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    Path(f"{path}.pub").write_text(public_key_to_openssh(private.public_key()) + "\n")
    return path


def _keygen_revoked(keygen: str, krl: Path, cert_path: Path) -> bool:
    done = subprocess.run(
        [keygen, "-Q", "-f", str(krl), str(cert_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    assert ("REVOKED" in done.stdout) == (done.returncode == 1), done.stdout
    return done.returncode == 1


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_ssh_keygen_query(tmp_path: Path, alg: KeyAlgorithm) -> None:
    """``ssh-keygen -Q`` applies sshd's revocation code to our KRL."""
    keygen = require_binary("ssh-keygen")
    ca = key(alg, "ca")
    krl_path = tmp_path / "krl"
    krl_path.write_bytes(sample(ca))
    cases = {"by-key-id": ("mallory", 1000, True), "by-serial": ("alice", 42, True)}
    cases["unrevoked"] = ("alice", 43, False)
    for name, (key_id, serial, revoked) in cases.items():
        path = tmp_path / f"{name}-cert.pub"
        path.write_text(to_openssh_line(cert(ca, key_id, serial)) + "\n")
        assert _keygen_revoked(keygen, krl_path, path) is revoked, name
    listing = subprocess.run(
        [keygen, "-Q", "-l", "-f", str(krl_path)], capture_output=True, text=True, check=False
    ).stdout
    assert "mallory" in listing and "bastion test" in listing


def test_parse_krl_written_by_ssh_keygen(tmp_path: Path) -> None:
    """ssh-keygen -k uses ranges, key ids, explicit keys and SHA256 fingerprints."""
    keygen = require_binary("ssh-keygen")
    ca, stolen = key("ed25519", "ca"), key("ed25519", "stolen")
    ca_path = _write_key(tmp_path / "ca", ca)
    stolen_pub = public_key_to_openssh(stolen.public_key())
    fp_key = key("ecdsa-p256", "fp")
    spec = tmp_path / "spec"
    spec.write_text(
        "serial: 10-20\nserial: 99\nid: mallory\n"
        f"key: {stolen_pub}\nhash: SHA256:{_fingerprint(fp_key)}\n"
    )
    out = tmp_path / "krl"
    done = subprocess.run(
        [keygen, "-k", "-f", str(out), "-s", f"{ca_path}.pub", "-z", "77", str(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    krl = parse_krl(out.read_bytes())
    assert krl.version == 77
    for serial, revoked in ((9, False), (10, True), (20, True), (21, False), (99, True)):
        assert krl.is_revoked(parse_ssh_certificate(cert(ca, "alice", serial))) is revoked
    assert krl.is_revoked(parse_ssh_certificate(cert(ca, "mallory", 5)))
    assert krl.key_revoked(stolen.public_key()) and krl.key_revoked(fp_key.public_key())
    assert not krl.key_revoked(ca.public_key())


def _fingerprint(private: PrivateKey) -> str:
    import base64

    digest = hashlib.sha256(ssh_public_key_blob(private.public_key())).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def test_ssh_keygen_checks_detached_signature(tmp_path: Path) -> None:
    keygen = require_binary("ssh-keygen")
    ca = key("ed25519", "ca")
    ca_path = _write_key(tmp_path / "ca", ca)
    data = sample(ca)
    (tmp_path / "krl").write_bytes(data)
    (tmp_path / "krl.sig").write_text(sign_krl(data, ca))

    def check(message: bytes) -> int:
        return subprocess.run(
            [
                keygen,
                "-Y",
                "check-novalidate",
                "-n",
                "bastion-krl",
                "-s",
                str(tmp_path / "krl.sig"),
            ],
            input=message,
            capture_output=True,
            check=False,
        ).returncode

    assert check(data) == 0
    assert check(data + b"x") != 0
    # and the other way round: ssh-keygen -Y sign verifies here
    done = subprocess.run(
        [keygen, "-Y", "sign", "-n", "bastion-krl", "-f", str(ca_path), str(tmp_path / "krl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = (tmp_path / "krl.sig").read_text()
    assert verify_krl_signature(data, theirs, [ca.public_key()]) == ca.public_key()
