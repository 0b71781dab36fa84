"""Server side of TPM attestation: parse what a device sends, make its credential challenge,
verify its signatures.

Layer: auth (pure functions over ``tpm2-pytss``'s structure codecs and ``cryptography``; no
TPM is opened here). MakeCredential is ``tpm2_pytss.utils.make_credential`` (the TPM spec's
KDFa/seed wrapping done in software by the library, never by us).

What the device sends, base64-encoded: the endorsement key's and the attestation key's
marshalled ``TPM2B_PUBLIC``, optionally the EK certificate (PEM), and signatures as marshalled
``TPMT_SIGNATURE``. A software-attested device sends a PEM public key and DER ECDSA signatures.
Every malformed input is one :class:`~bastion.errors.BadParameter` line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_SIGNATURE
from tpm2_pytss.utils import make_credential

from bastion.errors import BadParameter

__all__ = [
    "AKPublic",
    "EKPublic",
    "TCG_KP_EK_CERTIFICATE",
    "EKChainError",
    "IssuerWanted",
    "authn_message",
    "ca_issuers_uri",
    "load_issuer_certs",
    "missing_issuer",
    "b64",
    "make_challenge",
    "parse_ak",
    "parse_ek",
    "load_ek_roots",
    "spki_sha256",
    "unb64",
    "verify_ek_chain",
    "verify_signature",
]

AK_REQUIRED = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
)
"""An attestation key must be a restricted signing key that never leaves its TPM."""
MAX_BLOB = 4096
AUTHN_CONTEXT = b"bastion device authentication v1\x00"
ENROLL_CONTEXT = b"bastion device enrollment v1\x00"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    """Raises: BadParameter for text that is not base64 or is too long."""
    if len(text) > MAX_BLOB * 2:
        raise BadParameter(f"{what}: too long")
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadParameter(f"{what}: not base64") from None


def spki_sha256(pem: str) -> str:
    """SHA-256 (hex) of a PEM public key's DER SubjectPublicKeyInfo."""
    key = serialization.load_pem_public_key(pem.encode())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _unmarshal_public(raw: bytes, what: str) -> TPM2B_PUBLIC:
    try:
        public, used = TPM2B_PUBLIC.unmarshal(raw)
    except Exception:  # the C unmarshaller's errors (TSS2_Exception) and cffi's
        raise BadParameter(f"{what}: not a marshalled TPM2B_PUBLIC") from None
    if used != len(raw):
        raise BadParameter(f"{what}: {len(raw) - used} trailing bytes after the TPM2B_PUBLIC")
    return public


def _public_pem(public: TPM2B_PUBLIC, what: str) -> str:
    try:
        return bytes(public.to_pem()).decode()
    except Exception:
        raise BadParameter(f"{what}: unsupported key (use RSA or ECC NIST P-256)") from None


@dataclass(frozen=True, slots=True)
class AKPublic:
    public: TPM2B_PUBLIC
    name: bytes
    """The TPM name (nameAlg id + digest of the public area) credential activation binds to."""
    pem: str


@dataclass(frozen=True, slots=True)
class EKPublic:
    public: TPM2B_PUBLIC
    pem: str
    key_sha256: str
    cert_serial: str = ""
    cert_pem: str = ""


def parse_ak(text: str) -> AKPublic:
    """The attestation key from its base64 TPM2B_PUBLIC, its attributes checked.

    Raises:
        BadParameter: malformed, or not a restricted, fixed, TPM-generated signing key.
    """
    public = _unmarshal_public(unb64(text, "ak_public"), "ak_public")
    attrs = int(public.publicArea.objectAttributes)
    if attrs & int(AK_REQUIRED) != int(AK_REQUIRED) or attrs & int(TPMA_OBJECT.DECRYPT):
        raise BadParameter(
            "ak_public: the attestation key must be a restricted signing key generated in, and "
            "fixed to, the TPM"
        )
    if public.publicArea.type not in (TPM2_ALG.ECC, TPM2_ALG.RSA):
        raise BadParameter("ak_public: the attestation key must be ECC or RSA")
    if public.publicArea.nameAlg != TPM2_ALG.SHA256:
        raise BadParameter("ak_public: the attestation key's name algorithm must be SHA-256")
    pem = _public_pem(public, "ak_public")
    return AKPublic(public=public, name=bytes(public.get_name()), pem=pem)


def parse_ek(text: str, cert_pem: str = "") -> EKPublic:
    """The endorsement key from its base64 TPM2B_PUBLIC; with its certificate, the certificate's
    key must be the same key.

    Raises:
        BadParameter: malformed input, or a certificate for another key.
    """
    public = _unmarshal_public(unb64(text, "ek_public"), "ek_public")
    if int(public.publicArea.objectAttributes) & int(TPMA_OBJECT.DECRYPT) == 0:
        raise BadParameter("ek_public: an endorsement key is a decryption (storage) key")
    pem = _public_pem(public, "ek_public")
    key_hash = spki_sha256(pem)
    serial = ""
    if cert_pem:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            cert_key = cert.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except (ValueError, UnsupportedAlgorithm):
            raise BadParameter("ek_cert: not a PEM X.509 certificate") from None
        if spki_sha256(cert_key.decode()) != key_hash:
            raise BadParameter("ek_cert: the certificate is for another key than ek_public")
        serial = format(cert.serial_number, "x")
    return EKPublic(
        public=public, pem=pem, key_sha256=key_hash, cert_serial=serial, cert_pem=cert_pem
    )


TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
"""The extended key usage of an EK certificate (TCG EK Credential Profile)."""


class EKChainError(Exception):
    """The EK certificate does not chain to a configured manufacturer CA (one line, why)."""


def load_ek_roots(pem: str) -> list[x509.Certificate]:
    """The manufacturer CA certificates of ``device_trust.ek_ca_bundle`` (PEM, roots and
    intermediates alike: each is a trust anchor).

    Raises:
        BadParameter: no certificate, or a malformed one.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise BadParameter("ek_ca_bundle: not a PEM bundle of X.509 certificates") from None
    return certs


def verify_ek_chain(
    cert_pem: str,
    roots: list[x509.Certificate],
    now: datetime,
    intermediates: str = "",
    fetched: Sequence[x509.Certificate] = (),
) -> x509.Certificate:
    """Does the EK certificate chain to one of ``roots`` at ``now``? Returns the anchor.

    EK certificates are not TLS certificates: their subject is often empty, their subject
    alternative name is a critical directory name of TPM attributes (manufacturer, model,
    version: OIDs 2.23.133.2.x), and they carry the Subject Directory Attributes (TPM spec) and
    the EK extended key usage ``2.23.133.8.1``. The end-entity extension policy therefore
    admits any extension (critical or not); when an extended key usage is present it must name
    the EK certificate usage. CA certificates need basic constraints (the chain builder checks
    ``CA:TRUE``); signatures, validity and path length are checked as for any chain.
    ``fetched``: intermediates from the certificates' AIA (:func:`missing_issuer`); like
    ``intermediates`` they only help build the path, never anchor it.

    Raises:
        EKChainError: no chain, an expired or not yet valid certificate, a wrong usage.
    """
    try:
        leaf = x509.load_pem_x509_certificate(cert_pem.encode())
        extra = x509.load_pem_x509_certificates(intermediates.encode()) if intermediates else []
        extra += fetched
    except ValueError:
        raise EKChainError("the EK certificate is not a PEM X.509 certificate") from None
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except ValueError:
        raise EKChainError("the EK certificate has malformed extensions") from None
    if usage is not None and TCG_KP_EK_CERTIFICATE not in usage:
        raise EKChainError("the certificate's extended key usage is not an EK certificate's")
    ca_policy = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(roots))
            .time(now)
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        chain = verifier.verify(leaf, extra).chain
    except VerificationError as exc:
        raise EKChainError(f"no chain to a trusted manufacturer CA ({exc})") from None
    except ValueError as exc:  # unsupported key or signature algorithm
        raise EKChainError(f"the chain cannot be verified ({exc})") from None
    return chain[-1]


MAX_ISSUER_HOPS = 2
"""At most this many issuers are fetched from AIA URIs for one EK certificate."""
MAX_ISSUER_BYTES = 64 * 1024
"""The largest AIA caIssuers response read (a certificate or a small PKCS#7 bundle)."""
_MAX_URI = 1024


@dataclass(frozen=True, slots=True)
class IssuerWanted:
    """The certificate the chain lacks: its subject (the top certificate's issuer) and where
    the top certificate's Authority Information Access says it is published."""

    name: x509.Name
    uri: str


def ca_issuers_uri(cert: x509.Certificate) -> str:
    """The first http(s) caIssuers URI of the certificate's Authority Information Access
    extension; "" without one (absent, malformed, another scheme, unprintable or too long)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return ""
    for access in aia:
        location = access.access_location
        if access.access_method != AuthorityInformationAccessOID.CA_ISSUERS or not isinstance(
            location, x509.UniformResourceIdentifier
        ):
            continue
        uri = location.value
        printable = uri.isascii() and uri.isprintable() and " " not in uri
        if printable and len(uri) <= _MAX_URI and uri.lower().startswith(("http://", "https://")):
            return uri
    return ""


def missing_issuer(
    leaf: x509.Certificate,
    at_hand: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> IssuerWanted | None:
    """Which issuer to fetch next, if any, for the chain from ``leaf``.

    Walks up from ``leaf`` through ``at_hand`` (bundle intermediates, certificates already
    fetched) by issuer name. None when the top certificate's issuer is a configured root (the
    verifier decides the rest), when the top is self-issued (a root that is not configured is
    never fetched nor trusted), or when the top names no http(s) caIssuers URI.
    """
    top, used = leaf, 0
    while used <= len(at_hand):
        if top.issuer == top.subject or any(root.subject == top.issuer for root in roots):
            return None
        parent = next((cert for cert in at_hand if cert.subject == top.issuer), None)
        if parent is None:
            uri = ca_issuers_uri(top)
            return IssuerWanted(name=top.issuer, uri=uri) if uri else None
        top, used = parent, used + 1
    return None  # a loop of issuers: nothing to fetch, the verifier refuses


def load_issuer_certs(data: bytes) -> list[x509.Certificate]:
    """The certificates of an AIA caIssuers response: DER or PEM certificates, or a PKCS#7
    (DER or PEM) bundle (``application/pkix-cert``, ``application/pkcs7-mime``).

    Raises:
        ValueError: none of these, or no certificate in it (one line).
    """
    if len(data) > MAX_ISSUER_BYTES:
        raise ValueError(f"larger than {MAX_ISSUER_BYTES // 1024} KiB")
    loaders: list[Callable[[bytes], list[x509.Certificate]]]
    if b"-----BEGIN PKCS7-----" in data:
        loaders = [pkcs7.load_pem_pkcs7_certificates]
    elif b"-----BEGIN" in data:
        loaders = [x509.load_pem_x509_certificates]
    else:
        loaders = [
            lambda raw: [x509.load_der_x509_certificate(raw)],
            pkcs7.load_der_pkcs7_certificates,
        ]
    for load in loaders:
        try:
            certs = load(data)
            for cert in certs:  # parsed lazily: malformed names or extensions fail here
                _ = (cert.subject, cert.issuer, cert.extensions)
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
            continue  # InvalidVersion (a damaged version field) is no ValueError
        if certs:
            return certs
    raise ValueError("not a DER, PEM or PKCS#7 certificate")


def make_challenge(ek: EKPublic, ak: AKPublic, secret: bytes) -> tuple[str, str]:
    """MakeCredential: ``secret`` wrapped so that only the TPM holding ``ek`` releases it, and
    only for the key named ``ak.name`` (TPM2_ActivateCredential).

    Returns:
        (credential blob, encrypted secret), both base64 of their marshalled TPM2B forms.
    """
    from tpm2_pytss.types import TPM2B_NAME

    try:
        blob, enc = make_credential(ek.public, secret, TPM2B_NAME(ak.name))
    except Exception as exc:  # unsupported EK parameters
        raise BadParameter(f"ek_public: cannot make a credential for this key ({exc})") from None
    return b64(bytes(blob.marshal())), b64(bytes(enc.marshal()))


def authn_message(cluster: str, challenge_id: str, nonce: bytes, profile: dict[str, str]) -> bytes:
    """What the device signs at authentication: the context, the cluster, the challenge and the
    SHA-256 of its profile (canonical JSON), so a signature answers one challenge only."""
    digest = hashlib.sha256(
        json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    return b"%s%s\x00%s\x00%s%s" % (
        AUTHN_CONTEXT,
        cluster.encode(),
        challenge_id.encode(),
        nonce,
        digest,
    )


def enroll_message(cluster: str, session_id: str, nonce: bytes) -> bytes:
    """What a software-attested device signs to prove it holds its key at enrollment."""
    return b"%s%s\x00%s\x00%s" % (ENROLL_CONTEXT, cluster.encode(), session_id.encode(), nonce)


def verify_signature(public_pem: str, attestation: str, message: bytes, signature: str) -> bool:
    """Does ``signature`` (base64) over ``message`` verify under the credential's key?

    ``tpm``: a marshalled TPMT_SIGNATURE (ECDSA or RSASSA with SHA-256); ``software``: a DER
    ECDSA P-256/SHA-256 signature. Malformed signatures do not verify (False, no exception).
    """
    try:
        raw = unb64(signature, "signature")
        key = serialization.load_pem_public_key(public_pem.encode())
    except (BadParameter, ValueError, UnsupportedAlgorithm):
        return False
    try:
        if attestation == "software":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
            return True
        return _verify_tpm(key, raw, message)
    except (InvalidSignature, ValueError):
        return False


def _verify_tpm(key: object, raw: bytes, message: bytes) -> bool:
    try:
        sig, used = TPMT_SIGNATURE.unmarshal(raw)
    except Exception:
        return False
    if used != len(raw):
        return False
    if sig.sigAlg == TPM2_ALG.ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
        ecdsa = sig.signature.ecdsa
        if ecdsa.hash != TPM2_ALG.SHA256:
            return False
        r = int.from_bytes(bytes(ecdsa.signatureR), "big")
        s = int.from_bytes(bytes(ecdsa.signatureS), "big")
        key.verify(asym_utils.encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        return True
    if sig.sigAlg == TPM2_ALG.RSASSA and isinstance(key, rsa.RSAPublicKey):
        rsassa = sig.signature.rsassa
        if rsassa.hash != TPM2_ALG.SHA256:
            return False
        key.verify(bytes(rsassa.sig), message, padding.PKCS1v15(), hashes.SHA256())
        return True
    return False
