"""Interop: bastion.ca.x509 certificates read and verified by the real ``openssl``.

Subprocesses of real binaries belong here; the pure tests of the module are in
tests/unit/ca/test_x509.py."""

from __future__ import annotations

import functools
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.ca.keys import PrivateKey, generate_private_key
from bastion.ca.x509 import (
    issue_user_certificate,
    self_signed_ca,
)
from bastion.testing import require_binary
from bastion.types.authority import KeyAlgorithm
from bastion.types.identity import IDENTITY_OID, Identity, RouteToTarget

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
START = datetime(2026, 1, 1, tzinfo=UTC)


@functools.cache
def key(algorithm: KeyAlgorithm, name: str) -> PrivateKey:
    return generate_private_key(algorithm)


@functools.cache
def ca(algorithm: KeyAlgorithm, purpose: str, cluster: str = "example") -> x509.Certificate:
    return self_signed_ca(
        key(algorithm, purpose + cluster),
        f"{cluster} {purpose} CA",
        cluster,
        timedelta(days=365),
        now=START,
    )


def make_identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "cluster": "example",
        "user": "alice",
        "roles": ("dev",),
        "traits": {"team": ("blue", "red")},
        "logins": ("alice",),
        "expires": START + timedelta(hours=12),
        "route": RouteToTarget(db_service="pg", db_user="alice"),
        "mfa_verified": True,
        "mfa_scope": "node-1",
        "access_requests": ("req-1",),
    }
    fields.update(overrides)
    return Identity.model_validate(fields)


def user_cert(alg: KeyAlgorithm = "ed25519", **overrides: object) -> x509.Certificate:
    return issue_user_certificate(
        ca(alg, "tls_user"),
        key(alg, "tls_userexample"),
        key(alg, "subject").public_key(),
        make_identity(**overrides),
        not_before=START,
    )


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_openssl_reads_and_verifies(alg: KeyAlgorithm, tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    cert, root = user_cert(alg), ca(alg, "tls_user")
    (tmp_path / "leaf.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    text = subprocess.run(
        [openssl, "x509", "-text", "-noout", "-in", str(tmp_path / "leaf.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN=alice" in text.replace(" = ", "=")
    assert "CA:FALSE" in text
    assert "TLS Web Client Authentication" in text
    assert IDENTITY_OID in text
    verified = subprocess.run(
        [
            openssl,
            "verify",
            "-purpose",
            "sslclient",
            "-attime",
            str(int(START.timestamp()) + 60),
            "-CAfile",
            str(tmp_path / "ca.pem"),
            str(tmp_path / "leaf.pem"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
