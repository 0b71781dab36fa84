"""The pure parts of TPM-held user keys: the blob file, SSH encodings, the profile's agent
identities (the TPM itself: tests/integration/test_devices.py, with swtpm)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss.types import TPM2B_PUBLIC

from bastion.client.device.tpm_key import (
    KEY_FILE,
    TPMKeyBlob,
    load_blob,
    profile_agent_core,
    qualifying_data,
    save_blob,
    ssh_ecdsa_signature,
    ssh_public_line,
)
from bastion.client.ssh_agent import RequestIdentities
from bastion.errors import BadParameter, NotFound


def _blob(key: ec.EllipticCurvePrivateKey) -> TPMKeyBlob:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = TPM2B_PUBLIC.from_pem(pem)
    return TPMKeyBlob(public=bytes(public.marshal()), private=b"\x00\x04wrap", tcti="swtpm:")


def test_blob_round_trip_and_holds_no_private_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    blob = _blob(key)
    path = save_blob(tmp_path, blob)
    assert path.name == KEY_FILE and path.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in path.read_text()
    assert load_blob(tmp_path) == blob
    assert blob.public_key() == key.public_key()
    assert load_blob(tmp_path / "none") is None


@pytest.mark.parametrize(
    "text",
    ["", "{}", "[]", '{"format": "bsh-tpm-key/1", "public": "!", "private": "AA=="}',
     '{"format": "bsh-tpm-key/1", "public": "", "private": ""}',
     "-----BEGIN PRIVATE KEY-----"],
)  # fmt: skip
def test_bad_blobs_are_one_line_errors(text: str) -> None:
    with pytest.raises(BadParameter, match="key-store=tpm"):
        TPMKeyBlob.loads(text)


def test_a_blob_that_is_not_p256() -> None:
    with pytest.raises(BadParameter, match="ECC public key"):
        TPMKeyBlob(public=b"\x00\x01x", private=b"x").public_key()


def test_ssh_signature_verifies_as_openssh_would() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = b"session id and userauth request"
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    public = asyncssh.import_public_key(ssh_public_line(key.public_key(), "c"))
    assert public.verify(data, ssh_ecdsa_signature(r, s))
    assert not public.verify(b"other", ssh_ecdsa_signature(r, s))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1))
def test_mpints_are_minimal_and_positive(r: int, s: int) -> None:
    blob = ssh_ecdsa_signature(r, s)
    inner = blob[4 + 19 + 4 :]
    size = int.from_bytes(inner[:4], "big")
    raw = inner[4 : 4 + size]
    assert int.from_bytes(raw, "big") == r
    assert not raw or raw[0] < 0x80  # positive
    assert len(raw) <= 1 or raw[0] != 0 or raw[1] >= 0x80  # minimal


def test_qualifying_data_fits_a_tpm2b_data() -> None:
    assert qualifying_data("x" * 500) == hashlib.sha256(b"x" * 500).digest()


def test_profile_agent_offers_the_certificate_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="key-store=tpm"):
        profile_agent_core(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    save_blob(tmp_path, _blob(key))
    line = ssh_public_line(key.public_key())
    (tmp_path / "key-cert.pub").write_text(
        "ecdsa-sha2-nistp256-cert-v01@openssh.com " + base64.b64encode(b"cert").decode() + " u\n"
    )
    core = profile_agent_core(tmp_path)
    blobs = [i.key_blob for i in core.identities]
    assert blobs == [b"cert", base64.b64decode(line.split()[1])]
    assert core.answer(RequestIdentities())[4] == 12


def test_session_certificates_go_to_the_software_tls_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from bastion.client.device.tpm_key import tls_public_line

    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    line = tls_public_line(tmp_path)
    assert line.startswith("ssh-ed25519 ")
    assert asyncssh.read_private_key(str(tmp_path / "tls.key")).public_data == (
        asyncssh.import_public_key(line).public_data
    )


def test_the_tls_key_of_a_tpm_profile_is_the_tpm_key(tmp_path: Path) -> None:
    """A profile written by ``bsh login --key-store=tpm`` now (no ``tls.key``): the X.509
    certificate's key is the TPM-held one; neither file: one line saying what to run."""
    from bastion.client.device.tpm_key import tls_public_line

    with pytest.raises(NotFound, match="--key-store=tpm"):
        tls_public_line(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    save_blob(tmp_path, _blob(key))
    assert tls_public_line(tmp_path) == ssh_public_line(key.public_key())
