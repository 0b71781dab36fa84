"""Interop: bastion.ca.keys ids and pins against the real ``openssl``.

Subprocesses of real binaries belong here; the pure tests of the module are in
tests/unit/ca/test_keys.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.ca.keys import (
    generate_private_key,
    key_id,
    public_key_to_pem,
    spki_pin,
)
from bastion.types.authority import KeyAlgorithm

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
KEK = bytes(range(32))


def test_key_id_and_pin_match_openssl(tmp_path: Path) -> None:
    public = generate_private_key("ecdsa-p256").public_key()
    pem = tmp_path / "pub.pem"
    pem.write_text(public_key_to_pem(public))
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is required under CI=true")
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        der = subprocess.run(
            [openssl, "pkey", "-pubin", "-in", str(pem), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
    digest = hashlib.sha256(der).hexdigest()
    assert spki_pin(public) == f"sha256:{digest}"
    assert key_id(public) == digest[:16]
    assert key_id(generate_private_key().public_key()) != key_id(public)
