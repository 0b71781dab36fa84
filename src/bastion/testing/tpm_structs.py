"""TPM 2.0 structures made in software as a TPM would make them, for tests of the code that
verifies them (``auth/key_attest``, ``auth/key_proof``, the login's device ceremony): an
ECDSA ``TPMT_SIGNATURE`` by an attestation key, and a TPM2_Certify of a key by that AK.

Layer: testing. A software key stands in for the AK; nothing here touches a TPM.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_ECC_PARAMETER,
    TPM2B_PUBLIC,
    TPMS_ATTEST,
    TPMT_SIGNATURE,
)

from bastion.auth.key_attest import KEY_RESIDENT

__all__ = ["RESIDENT", "b64", "certify", "public_pem", "tpm_signature"]

RESIDENT = KEY_RESIDENT | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
"""The attributes of a TPM-resident signing key (what ``bsh login --key-store=tpm`` creates)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM of ``key``."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def tpm_signature(ak: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    """``ak``'s ECDSA-SHA256 signature of ``message`` as a marshalled ``TPMT_SIGNATURE``
    (base64)."""
    r, s = decode_dss_signature(ak.sign(message, ec.ECDSA(hashes.SHA256())))
    sig = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
    sig.signature.ecdsa.hash = TPM2_ALG.SHA256
    sig.signature.ecdsa.signatureR = TPM2B_ECC_PARAMETER(r.to_bytes(32, "big"))
    sig.signature.ecdsa.signatureS = TPM2B_ECC_PARAMETER(s.to_bytes(32, "big"))
    return b64(bytes(sig.marshal()))


def certify(
    ak: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    nonce: bytes,
    *,
    attrs: TPMA_OBJECT = RESIDENT,
    named: ec.EllipticCurvePrivateKey | None = None,
    kind: TPM2_ST = TPM2_ST.ATTEST_CERTIFY,
) -> tuple[str, str, str]:
    """(key_public, attest, signature), base64, as TPM2_Certify of ``key`` by ``ak`` over the
    qualifying data ``nonce`` returns them (``named``: certify another key's name instead;
    ``attrs``/``kind``: a key or an attestation of another sort)."""
    public = TPM2B_PUBLIC.from_pem(public_pem(key).encode(), objectAttributes=attrs)
    name_of = TPM2B_PUBLIC.from_pem(public_pem(named or key).encode(), objectAttributes=attrs)
    info = TPMS_ATTEST(magic=TPM2_GENERATED.VALUE, type=kind, extraData=TPM2B_DATA(nonce))
    info.attested.certify.name = name_of.get_name()
    attest = bytes(info.marshal())
    return b64(bytes(public.marshal())), b64(attest), tpm_signature(ak, attest)
