"""client/tls.py: every client mTLS context follows one set of rules and fails one way."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.client.tls import (
    MIN_VERSION,
    ClientTLSError,
    pem_context,
    profile_context,
    unverified_context,
    verified_context,
)
from bastion.errors import BadParameter

NOW = datetime.now(UTC)


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> str:
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return (
        builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    ca_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    return {
        "ca": _cert("ca", ca_key, None),
        "cert": _cert("alice", leaf_key, ("ca", ca_key)),
        "key": _key_pem(leaf_key),
        "other_key": _key_pem(other_key),
    }


def _profile(tmp_path: Path, pki: dict[str, str]) -> Path:
    (tmp_path / "ca.pem").write_text(pki["ca"])
    (tmp_path / "tls.crt").write_text(pki["cert"])
    (tmp_path / "tls.key").write_text(pki["key"])
    return tmp_path


def _check_rules(ctx: ssl.SSLContext) -> None:
    assert ctx.minimum_version == MIN_VERSION == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # only the pinned CA, never the system store


def test_every_builder_applies_the_same_rules(tmp_path: Path, pki: dict[str, str]) -> None:
    _check_rules(verified_context(pki["ca"]))
    _check_rules(verified_context(pki["ca"], *_files(tmp_path, pki), alpn=["http/1.1"]))
    _check_rules(pem_context(pki["ca"], pki["cert"], pki["key"], ["bastion-tunnel/1"]))
    _check_rules(profile_context(_profile(tmp_path, pki), "dev", ["bastion-ssh/1"]))
    session = profile_context(tmp_path, "dev", ["bastion-ssh/1"], cert_pem=pki["cert"])
    _check_rules(session)


def _files(tmp_path: Path, pki: dict[str, str]) -> tuple[Path, Path]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text(pki["cert"])
    key.write_text(pki["key"])
    return cert, key


def test_failures_are_one_error_type(tmp_path: Path, pki: dict[str, str]) -> None:
    with pytest.raises(ClientTLSError, match="cluster CA"):
        verified_context("not a certificate")
    with pytest.raises(ClientTLSError, match="client certificate"):
        pem_context(pki["ca"], pki["cert"], pki["other_key"])
    with pytest.raises(ClientTLSError, match=r"incomplete .*ca\.pem is missing.*run bsh login"):
        profile_context(tmp_path / "nowhere", "dev", [])
    (_profile(tmp_path, pki) / "tls.key").write_text(pki["other_key"])
    with pytest.raises(ClientTLSError, match="profile dev is unusable.*run bsh login"):
        profile_context(tmp_path, "dev", [])
    with pytest.raises(ClientTLSError, match="session certificate does not load"):
        profile_context(tmp_path, "dev", [], cert_pem=pki["cert"])
    assert issubclass(ClientTLSError, BadParameter)


def test_unverified_context_is_only_for_the_pinned_ping() -> None:
    ctx = unverified_context()
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version == MIN_VERSION


def _tpm_profile(tmp_path: Path, pki: dict[str, str]) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    """A ``bsh login --key-store=tpm`` profile: ``key.tpm`` (the blob of a key standing in for
    the TPM's), ``tls.crt`` for it, no ``tls.key``."""
    from tpm2_pytss.types import TPM2B_PUBLIC

    from bastion.client.device.tpm_key import TPMKeyBlob, save_blob

    ca_key = ec.generate_private_key(ec.SECP256R1())
    held = ec.generate_private_key(ec.SECP256R1())
    pub_pem = held.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = bytes(TPM2B_PUBLIC.from_pem(pub_pem).marshal())
    save_blob(tmp_path, TPMKeyBlob(public=public, private=b"\x00\x01w", tcti="swtpm:"))
    (tmp_path / "ca.pem").write_text(_cert("ca", ca_key, None))
    (tmp_path / "tls.crt").write_text(_cert("alice", held, ("ca", ca_key)))
    return tmp_path, held


def test_a_tpm_profile_presents_the_tpm_held_key(tmp_path: Path, pki: dict[str, str]) -> None:
    """No ``tls.key``: the context presents ``tls.crt`` with the TPM-held key (the TPM signs
    at the handshake: tests/unit/client/device/test_tpm_tls.py, and with swtpm in
    tests/integration/test_devices.py); a certificate for another key is one error."""
    from bastion.client.tls import profile_key_is_tpm, resource_context

    path, held = _tpm_profile(tmp_path, pki)
    assert profile_key_is_tpm(path)
    _check_rules(profile_context(path, "dev", ["bastion-ssh/1"]))
    session = _cert("alice", held, ("ca", ec.generate_private_key(ec.SECP256R1())))
    _check_rules(profile_context(path, "dev", [], cert_pem=session))
    db_cert = (path / "tls.crt").read_text()
    _check_rules(resource_context(path, pki["ca"], db_cert, path / "db" / "x.key", []))
    with pytest.raises(ClientTLSError, match="session certificate does not load.*TPM-held"):
        profile_context(path, "dev", [], cert_pem=pki["cert"])
    (path / "tls.crt").write_text(pki["cert"])
    with pytest.raises(ClientTLSError, match="profile dev is unusable with the TPM-held key"):
        profile_context(path, "dev", [])
    # a profile written before the TLS key moved into the TPM keeps its tls.key
    (path / "tls.key").write_text(pki["key"])
    assert not profile_key_is_tpm(path)
    _check_rules(profile_context(path, "dev", []))
