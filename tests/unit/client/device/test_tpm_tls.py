"""The TLS bridge of TPM-held keys (:mod:`bastion.client.device.tpm_tls`): its pure parts, and
the bridge itself over memory BIOs (no sockets) with a software signer standing in for the TPM
(the TPM: tests/integration/test_devices.py, with swtpm)."""

from __future__ import annotations

import datetime
import gc
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from bastion.client.device import tpm_tls
from bastion.client.device.tpm_tls import (
    TLSKeyError,
    check_digest,
    install_key,
    scalar_bytes,
    ssl_ctx_pointer,
    verify_mode_flags,
)


@given(st.integers(min_value=1, max_value=(1 << 256) - 1))
def test_scalar_bytes_round_trip(value: int) -> None:
    raw = scalar_bytes(value)
    assert len(raw) == 32 and int.from_bytes(raw, "big") == value


@pytest.mark.parametrize("value", [0, -1, 1 << 256])
def test_scalar_bytes_refuses_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        scalar_bytes(value)


def test_check_digest_only_sha256_sized() -> None:
    assert check_digest(b"\x01" * 32) == b"\x01" * 32
    for size in (20, 48, 64):
        with pytest.raises(ValueError, match="SHA-256"):
            check_digest(b"\x01" * size)


def test_verify_mode_flags() -> None:
    assert verify_mode_flags(ssl.CERT_NONE) == 0
    assert verify_mode_flags(ssl.CERT_OPTIONAL) == 1
    assert verify_mode_flags(ssl.CERT_REQUIRED) == 3


# ---- the bridge, over memory BIOs ----------------------------------------------------------


def _cert(
    name: str,
    public: ec.EllipticCurvePublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class _Pair:
    """A CA, a server context that requires a client certificate, and a client key."""

    def __init__(self, tmp: Path) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_pem = _pem(_cert("test-ca", ca_key.public_key(), ca_key, ca=True)).decode()
        server_key = ec.generate_private_key(ec.SECP256R1())
        (tmp / "server.pem").write_bytes(_pem(_cert("server", server_key.public_key(), ca_key)))
        (tmp / "server.key").write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        self.server.load_verify_locations(cadata=self.ca_pem)
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert_file = tmp / "client.pem"
        self.cert_file.write_bytes(_pem(_cert("alice", self.key.public_key(), ca_key)))
        self.digests: list[bytes] = []

    def signer(self, digest: bytes) -> tuple[int, int]:
        self.digests.append(digest)
        der = self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return decode_dss_signature(der)

    def client(self, version: ssl.TLSVersion) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem)
        ctx.maximum_version = version
        return ctx


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> str:
    """Both sides through memory BIOs; returns the client's subject as the server saw it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="server")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for side, obj in (("c", c), ("s", s)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    c.write(b"ping")  # TLS 1.3: the server reads the client's Finished (and certificate) here
    s_in.write(c_out.read())
    assert s.read(4) == b"ping"
    der = s.getpeercert(binary_form=True)
    assert der is not None
    subject = x509.load_der_x509_certificate(der).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_bridge_signs_the_handshake(tmp_path: Path, version: ssl.TLSVersion) -> None:
    pair = _Pair(tmp_path)
    ctx = pair.client(version)
    install_key(ctx, pair.cert_file, pair.key.public_key(), pair.signer)
    assert _handshake(ctx, pair.server) == "alice"
    assert pair.digests and all(len(d) == 32 for d in pair.digests)


def test_a_failing_signer_fails_the_handshake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = _Pair(tmp_path)
    ctx = pair.client(ssl.TLSVersion.TLSv1_3)

    def broken(_digest: bytes) -> tuple[int, int]:
        raise OSError("the TPM is gone")

    install_key(ctx, pair.cert_file, pair.key.public_key(), broken)
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, pair.server)
    assert "the TPM did not sign the TLS handshake: the TPM is gone" in capsys.readouterr().err


def test_a_certificate_for_another_key_is_refused(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(TLSKeyError, match="not for the TPM-held key"):
        install_key(pair.client(ssl.TLSVersion.TLSv1_3), pair.cert_file, other, pair.signer)


def test_a_missing_certificate_is_one_line(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    with pytest.raises(TLSKeyError, match="cannot load the client certificate"):
        install_key(
            pair.client(ssl.TLSVersion.TLSv1_3),
            tmp_path / "nope.pem",
            pair.key.public_key(),
            pair.signer,
        )


def test_the_context_pointer_is_checked() -> None:
    ctx = ssl.create_default_context()
    assert ssl_ctx_pointer(ctx) != 0
    with pytest.raises(TLSKeyError, match="CPython's ssl"):
        ssl_ctx_pointer(object())  # type: ignore[arg-type]


def test_the_signer_is_dropped_with_the_context(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    bridge = tpm_tls._get_bridge()
    before = len(bridge.signers)
    ctx: ssl.SSLContext | None = pair.client(ssl.TLSVersion.TLSv1_3)
    assert ctx is not None
    install_key(ctx, pair.cert_file, pair.key.public_key(), pair.signer)
    assert len(bridge.signers) == before + 1
    ctx = None
    gc.collect()
    assert len(bridge.signers) == before


def test_many_contexts_share_one_method(tmp_path: Path) -> None:
    pair = _Pair(tmp_path)
    keep: list[ssl.SSLContext] = []
    for _ in range(3):
        ctx = pair.client(ssl.TLSVersion.TLSv1_3)
        install_key(ctx, pair.cert_file, pair.key.public_key(), pair.signer)
        assert _handshake(ctx, pair.server) == "alice"
        keep.append(ctx)
    assert len(pair.digests) == 3
