"""Interop: bastion.ca.authority exports read by the real ``ssh-keygen``.

Subprocesses of real binaries belong here; the pure tests of the module are in
tests/unit/ca/test_authority.py."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.ca.authority import (
    export_known_hosts,
    export_trust,
    new_cert_authority,
    signing_key,
)
from bastion.ca.keys import public_key_to_openssh
from bastion.ca.sshcert import parse_ssh_certificate, ssh_host_certificate
from bastion.clock import FakeClock
from bastion.errors import BadParameter
from bastion.testing import require_binary
from bastion.types.authority import CAType, CertAuthority, KeyAlgorithm

KEK = b"\x01" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")


def make(ca_type: CAType, algorithm: KeyAlgorithm = "ed25519") -> CertAuthority:
    return new_cert_authority(ca_type, "example", algorithm, KEK, FakeClock(START))


def test_export_ssh_user_is_readable_by_ssh_keygen(tmp_path: Path) -> None:
    ssh_keygen = require_binary("ssh-keygen")
    path = tmp_path / "trusted_user_ca_keys"
    path.write_text(export_trust(make("ssh_user", "ecdsa-p256")))
    out = subprocess.run(
        [ssh_keygen, "-l", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "(ECDSA)" in out


def test_export_known_hosts_trusts_host_certificates(tmp_path: Path) -> None:
    ssh_keygen = require_binary("ssh-keygen")
    ca = make("ssh_host")
    text = export_trust(ca)
    assert text.startswith("@cert-authority *.example,example ssh-ed25519 ")
    assert export_known_hosts(ca, "*.corp").startswith("@cert-authority *.corp ssh-ed25519 ")
    with pytest.raises(BadParameter, match="whitespace"):
        export_known_hosts(ca, "a b")
    with pytest.raises(BadParameter, match="ssh_host CA"):
        export_known_hosts(make("ssh_user"))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(text)
    found = subprocess.run(
        [ssh_keygen, "-F", "node-1.example", "-f", str(known_hosts)],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0 and "@cert-authority" in found.stdout
    missing = subprocess.run(
        [ssh_keygen, "-F", "node-1.elsewhere", "-f", str(known_hosts)], capture_output=True
    )
    assert missing.returncode != 0
    # the exported anchor is the key that signs host certificates
    host_key = ed25519.Ed25519PrivateKey.generate().public_key()
    cert = parse_ssh_certificate(
        ssh_host_certificate(
            signing_key(ca, KEK), host_key, "node-1", [], 1, START, START + timedelta(days=1)
        )
    )
    assert public_key_to_openssh(cert.signature_key) in text
