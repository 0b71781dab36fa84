"""TPM2_Certify verification of a user key by a device's AK (pure: the TPM structures are
built and signed in process, as a TPM would)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss.constants import TPM2_ST, TPMA_OBJECT

from bastion.auth.device_attest import spki_sha256
from bastion.auth.key_attest import certified_key_sha256
from bastion.errors import AccessDenied, BadParameter
from bastion.testing.tpm_structs import b64 as _b64
from bastion.testing.tpm_structs import certify
from bastion.testing.tpm_structs import public_pem as _pem
from bastion.testing.tpm_structs import tpm_signature as _tpm_sign

NONCE = b"fresh challenge"


def _certify(
    ak: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    nonce: bytes = NONCE,
    **change: Any,
) -> tuple[str, str, str]:
    """(key_public, attest, signature) as TPM2_Certify of ``key`` by ``ak`` returns them."""
    return certify(ak, key, nonce, **change)


def _keys() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]:
    return ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())


def test_a_key_certified_by_the_ak_is_tpm_resident() -> None:
    ak, key = _keys()
    got = certified_key_sha256(_pem(ak), *_certify(ak, key), NONCE)
    assert got == spki_sha256(_pem(key))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"nonce": b"old challenge"}, "stale or foreign"),
        ({"kind": TPM2_ST.ATTEST_CREATION}, "not a TPM2_Certify"),
        ({"attrs": TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT}, "may leave"),
        ({"named": "other"}, "another key"),
    ],
)
def test_what_does_not_prove_a_resident_key_is_refused(change: dict, match: str) -> None:
    ak, key = _keys()
    if change.get("named") == "other":
        change = {"named": ec.generate_private_key(ec.SECP256R1())}
    with pytest.raises(AccessDenied, match=match):
        certified_key_sha256(_pem(ak), *_certify(ak, key, **change), NONCE)


def test_another_tpms_signature_is_refused() -> None:
    ak, key = _keys()
    public, attest, _ = _certify(ak, key)
    forger = ec.generate_private_key(ec.SECP256R1())
    signature = _tpm_sign(forger, base64.b64decode(attest))
    with pytest.raises(AccessDenied, match="does not verify"):
        certified_key_sha256(_pem(ak), public, attest, signature, NONCE)


def test_malformed_structures_are_one_line_errors() -> None:
    ak, key = _keys()
    public, attest, signature = _certify(ak, key)
    with pytest.raises(BadParameter, match="key_public"):
        certified_key_sha256(_pem(ak), _b64(b"\x00\x02xx"), attest, signature, NONCE)
    with pytest.raises(BadParameter, match="attest"):
        certified_key_sha256(_pem(ak), public, "not base64!", signature, NONCE)
    with pytest.raises(BadParameter, match="trailing"):
        certified_key_sha256(
            _pem(ak), public, _b64(base64.b64decode(attest) + b"x"), signature, NONCE
        )


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=80))
def test_garbage_never_passes_and_never_crashes(key: bytes, attest: bytes, sig: bytes) -> None:
    ak = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises((AccessDenied, BadParameter)):
        certified_key_sha256(_pem(ak), _b64(key), _b64(attest), _b64(sig), NONCE)
