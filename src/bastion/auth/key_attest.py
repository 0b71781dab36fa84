"""Hardware-held user keys (issue 13, part 7, groundwork): is a user's certificate key
TPM-resident?

Layer: auth (pure: TPM structure parsing and signature checks, no IO, no clock reads). A key
counts as TPM-resident when it is the device's enrolled TPM credential, or when the device's
attestation key (AK) certified it with TPM2_Certify: the TPM signs a ``TPMS_ATTEST`` of type
``TPM_ST_ATTEST_CERTIFY`` naming the key (its TPM name, the digest of its public area), with
the caller's qualifying data (a fresh challenge) as ``extraData``. The key's public area must
say it was generated in, and cannot leave, the TPM (``fixedTPM``, ``fixedParent``,
``sensitiveDataOrigin``). The decision over the result is
:func:`bastion.rbac.device_trust.hardware_key_refusal`.
"""

from __future__ import annotations

from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST

from bastion.auth.device_attest import MAX_BLOB, spki_sha256, unb64, verify_signature
from bastion.errors import AccessDenied, BadParameter

__all__ = ["KEY_RESIDENT", "certified_key_sha256"]

KEY_RESIDENT = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
"""The attributes of a key that was generated in its TPM and never leaves it."""


def _check_size(raw: bytes, what: str) -> None:
    if not raw or len(raw) > MAX_BLOB:
        raise BadParameter(f"{what}: empty or too large")


def _public(raw: bytes) -> TPM2B_PUBLIC:
    _check_size(raw, "key_public")
    try:
        public, used = TPM2B_PUBLIC.unmarshal(raw)
    except Exception:
        raise BadParameter("key_public: not a marshalled TPM2B_PUBLIC") from None
    if used != len(raw):
        raise BadParameter("key_public: trailing bytes")
    return public


def _attest(raw: bytes) -> TPMS_ATTEST:
    _check_size(raw, "attest")
    try:
        info, used = TPMS_ATTEST.unmarshal(raw)
    except Exception:
        raise BadParameter("attest: not a marshalled TPMS_ATTEST") from None
    if used != len(raw):
        raise BadParameter("attest: trailing bytes")
    return info


def certified_key_sha256(
    ak_public_pem: str,
    key_public: str,
    attest: str,
    signature: str,
    qualifying_data: bytes,
) -> str:
    """Verify that the AK (``ak_public_pem``, a device's enrolled TPM credential) certified
    ``key_public`` (base64 TPM2B_PUBLIC) with TPM2_Certify (``attest``: base64 TPMS_ATTEST,
    ``signature``: base64 TPMT_SIGNATURE over it) for ``qualifying_data``; returns the
    SHA-256 of the certified key's SubjectPublicKeyInfo (what
    :func:`~bastion.rbac.device_trust.hardware_key_refusal` compares with the certificate's
    key).

    Raises:
        BadParameter: malformed structures.
        AccessDenied: the attestation does not prove a TPM-resident key (not TPM-generated,
            not a certification, another key, stale qualifying data, a bad signature, or a
            key that may leave the TPM).
    """
    raw_key = unb64(key_public, "key_public")
    raw_attest = unb64(attest, "attest")
    public, info = _public(raw_key), _attest(raw_attest)
    if not verify_signature(ak_public_pem, "tpm", raw_attest, signature):
        raise AccessDenied("key attestation: the signature does not verify against the device")
    if info.magic != TPM2_GENERATED.VALUE or info.type != TPM2_ST.ATTEST_CERTIFY:
        raise AccessDenied("key attestation: not a TPM2_Certify statement of the TPM")
    if bytes(info.extraData) != qualifying_data:
        raise AccessDenied("key attestation: stale or foreign challenge")
    if bytes(info.attested.certify.name) != bytes(public.get_name()):
        raise AccessDenied("key attestation: the TPM certified another key")
    area = public.publicArea
    attrs = int(area.objectAttributes)
    if attrs & int(KEY_RESIDENT) != int(KEY_RESIDENT):
        raise AccessDenied(
            "key attestation: the key was not generated in the TPM or may leave it "
            "(fixedTPM, fixedParent and sensitiveDataOrigin are required)"
        )
    if area.type not in (TPM2_ALG.ECC, TPM2_ALG.RSA):
        raise BadParameter("key_public: only ECC and RSA keys")
    try:
        pem = bytes(public.to_pem()).decode()
    except Exception:
        raise BadParameter("key_public: unsupported key (use RSA or ECC NIST P-256)") from None
    return spki_sha256(pem)
