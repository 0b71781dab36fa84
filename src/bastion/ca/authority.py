"""Building and reading CertAuthority resources: key pairs, signing keys, trust anchors, export.

Layer: pure over keys and resources (the KEK and the clock are passed in; nothing is stored
here). The auth service persists what these functions return.

One CA per purpose (ARCHITECTURE.md section 6, principle 4). What each type stores:

=========== ====================================== =====================================
type        ``CAKeyPair.public_key``                ``CAKeyPair.cert_pem``
=========== ====================================== =====================================
ssh_user    OpenSSH public key line                 (empty)
ssh_host    OpenSSH public key line                 (empty)
tls_user    PEM SubjectPublicKeyInfo                self-signed CA certificate
tls_host    PEM SubjectPublicKeyInfo                self-signed CA certificate
db          PEM SubjectPublicKeyInfo                self-signed CA certificate
jwt         PEM SubjectPublicKeyInfo                (empty)
=========== ====================================== =====================================

Private keys are sealed with the KEK; the AAD is ``bastion-ca:<cluster>:<type>:<key id>``, so a
sealed key copied into another CA record (another purpose) does not decrypt.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.ca.keys import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_id,
    load_public_key,
    public_key_to_openssh,
    public_key_to_pem,
    seal_private_key,
    unseal_private_key,
)
from bastion.ca.x509 import self_signed_ca
from bastion.clock import Clock
from bastion.errors import BadParameter
from bastion.types.authority import (
    CAKeyPair,
    CAType,
    CertAuthority,
    CertAuthoritySpec,
    KeyAlgorithm,
)
from bastion.types.meta import Metadata

__all__ = [
    "CA_LIFETIME",
    "SSH_CA_TYPES",
    "X509_CA_TYPES",
    "ExportFormat",
    "ca_name",
    "export_known_hosts",
    "export_trust",
    "key_aad",
    "new_cert_authority",
    "new_keypair",
    "signing_key",
    "trusted_certificates",
    "trusted_public_keys",
]

CA_LIFETIME = timedelta(days=3650)
"""Lifetime of self-signed X.509 CA certificates; rotation replaces them long before."""
SSH_CA_TYPES: frozenset[CAType] = frozenset({"ssh_user", "ssh_host"})
X509_CA_TYPES: frozenset[CAType] = frozenset({"tls_user", "tls_host", "db"})
ExportFormat = Literal["openssh", "authorized_keys", "known_hosts", "pem", "jwks"]
_FORMATS: dict[CAType, tuple[ExportFormat, ...]] = {
    "ssh_user": ("openssh", "authorized_keys"),
    "ssh_host": ("known_hosts", "openssh"),
    "tls_user": ("pem",),
    "tls_host": ("pem",),
    "db": ("pem",),
    "jwt": ("jwks", "pem"),
}


def ca_name(ca_type: CAType, cluster: str) -> str:
    """Resource name of a CA: ``<type with dashes>.<cluster>``, e.g. ``ssh-user.example``."""
    return f"{ca_type.replace('_', '-')}.{cluster}"


def key_aad(ca_type: CAType, cluster: str, kid: str) -> str:
    """The AAD a CA private key is sealed with (binds it to cluster, purpose and key id)."""
    return f"bastion-ca:{cluster}:{ca_type}:{kid}"


def new_keypair(
    ca_type: CAType,
    cluster: str,
    algorithm: KeyAlgorithm,
    kek: bytes,
    now: datetime,
) -> CAKeyPair:
    """Generate a CA key pair with its public encodings and sealed private key.

    Args:
        ca_type: the CA purpose.
        cluster: the cluster name (CA certificate O and part of the AAD).
        algorithm: key algorithm.
        kek: 32-byte key-encryption key.
        now: creation time (from a Clock).

    Returns:
        The key pair (with ``cert_pem`` for X.509 CA types).

    Raises:
        BadParameter: unknown CA type or algorithm, or a bad KEK.
    """
    if ca_type not in _FORMATS:
        raise BadParameter(f"unknown CA type {ca_type!r}: use one of {', '.join(_FORMATS)}")
    key = generate_private_key(algorithm)
    public = key.public_key()
    kid = key_id(public)
    cert_pem = ""
    if ca_type in SSH_CA_TYPES:
        public_text = public_key_to_openssh(public, f"{ca_type}@{cluster}")
    else:
        public_text = public_key_to_pem(public)
    if ca_type in X509_CA_TYPES:
        cert = self_signed_ca(key, f"{cluster} {ca_type} CA", cluster, CA_LIFETIME, now=now)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return CAKeyPair(
        id=kid,
        algorithm=algorithm,
        public_key=public_text,
        cert_pem=cert_pem,
        private_key_encrypted=seal_private_key(key, kek, key_aad(ca_type, cluster, kid)),
        created=now,
    )


def new_cert_authority(
    ca_type: CAType,
    cluster: str,
    algorithm: KeyAlgorithm,
    kek: bytes,
    clock: Clock,
) -> CertAuthority:
    """Create a CA resource with one fresh active key, in rotation phase ``standby``.

    Args:
        ca_type: the CA purpose.
        cluster: the cluster name.
        algorithm: key algorithm of the first key.
        kek: 32-byte key-encryption key.
        clock: source of the creation time.

    Returns:
        The resource, named :func:`ca_name`.

    Raises:
        BadParameter: unknown CA type or algorithm, bad KEK, or an invalid cluster name.
    """
    keypair = new_keypair(ca_type, cluster, algorithm, kek, clock.now())
    try:
        metadata = Metadata(name=ca_name(ca_type, cluster))
    except ValueError as exc:
        raise BadParameter(f"invalid cluster name {cluster!r}") from exc
    return CertAuthority(
        metadata=metadata,
        spec=CertAuthoritySpec(type=ca_type, cluster=cluster, active_keys=[keypair]),
    )


def signing_key(ca: CertAuthority, kek: bytes) -> PrivateKey:
    """Decrypt the private key that signs for this CA (the first active key).

    Args:
        ca: the CA resource, as stored by auth (with secrets).
        kek: the key-encryption key.

    Returns:
        The private key.

    Raises:
        BadParameter: no active key, a copy without secrets, a wrong KEK or a key record
            that does not match its public key.
    """
    if not ca.spec.active_keys:
        raise BadParameter(f"CA {ca.name} has no active key")
    pair = ca.spec.active_keys[0]
    if not pair.private_key_encrypted:
        raise BadParameter(f"CA {ca.name} holds no private key (a copy without secrets)")
    key = unseal_private_key(
        pair.private_key_encrypted, kek, key_aad(ca.spec.type, ca.spec.cluster, pair.id)
    )
    if key_id(key.public_key()) != pair.id:
        raise BadParameter(f"CA {ca.name}: private key does not match key id {pair.id}")
    return key


def trusted_public_keys(ca: CertAuthority) -> list[PublicKey]:
    """Every public key this CA trusts: active keys first, then additional trusted keys.

    Args:
        ca: the CA resource.

    Returns:
        The keys.

    Raises:
        BadParameter: a stored public key cannot be read.
    """
    return [load_public_key(pair.public_key) for pair in ca.spec.trusted_keys()]


def trusted_certificates(ca: CertAuthority) -> list[x509.Certificate]:
    """Every X.509 CA certificate this CA trusts (active and additional).

    Args:
        ca: a tls_user, tls_host or db CA.

    Returns:
        The CA certificates.

    Raises:
        BadParameter: the CA type has no certificates, or one cannot be read.
    """
    if ca.spec.type not in X509_CA_TYPES:
        raise BadParameter(f"CA type {ca.spec.type} has no X.509 certificates")
    certs = []
    for pair in ca.spec.trusted_keys():
        try:
            certs.append(x509.load_pem_x509_certificate(pair.cert_pem.encode()))
        except ValueError as exc:
            raise BadParameter(f"CA {ca.name} key {pair.id}: unreadable certificate") from exc
    return certs


def _openssh_lines(ca: CertAuthority) -> list[str]:
    return [
        public_key_to_openssh(key, f"type={ca.spec.type} cluster={ca.spec.cluster}")
        for key in trusted_public_keys(ca)
    ]


def export_known_hosts(ca: CertAuthority, host_pattern: str | None = None) -> str:
    """``known_hosts`` lines that trust a host CA: ``@cert-authority <pattern> <key>``.

    Args:
        ca: an ssh_host CA.
        host_pattern: OpenSSH host pattern(s); default ``*.<cluster>,<cluster>``.

    Returns:
        One line per trusted key, newline-terminated.

    Raises:
        BadParameter: not an ssh_host CA, or a pattern with whitespace.
    """
    if ca.spec.type != "ssh_host":
        raise BadParameter(f"known_hosts lines need an ssh_host CA, not {ca.spec.type}")
    pattern = host_pattern or f"*.{ca.spec.cluster},{ca.spec.cluster}"
    if not pattern or any(c.isspace() for c in pattern):
        raise BadParameter(f"invalid host pattern {pattern!r}: no whitespace allowed")
    return "".join(f"@cert-authority {pattern} {line}\n" for line in _openssh_lines(ca))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key: PublicKey, kid: str) -> dict[str, str]:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(raw),
            "alg": "EdDSA",
            "use": "sig",
            "kid": kid,
        }
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
            "alg": "ES256",
            "use": "sig",
            "kid": kid,
        }
    assert isinstance(key, rsa.RSAPublicKey)
    rsa_numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "n": _b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
    }


def export_trust(ca: CertAuthority, fmt: ExportFormat | None = None) -> str:
    """Export a CA's trust anchors for ``bctl auth export`` (never private keys).

    Args:
        ca: the CA resource.
        fmt: the output format; None picks the natural one for the type:

            * ssh_user: ``openssh`` (lines for sshd ``TrustedUserCAKeys``) or
              ``authorized_keys`` (``cert-authority <key>`` lines);
            * ssh_host: ``known_hosts`` (``@cert-authority *.<cluster>,<cluster> <key>``) or
              ``openssh``; see :func:`export_known_hosts` for another host pattern;
            * tls_user, tls_host, db: ``pem`` (concatenated CA certificates);
            * jwt: ``jwks`` (a JSON Web Key Set) or ``pem`` (public keys).

    Returns:
        The text, newline-terminated.

    Raises:
        BadParameter: a format that does not fit the CA type (the message lists the ones
            that do).
    """
    allowed = _FORMATS[ca.spec.type]
    chosen = fmt or allowed[0]
    if chosen not in allowed:
        raise BadParameter(
            f"cannot export a {ca.spec.type} CA as {chosen!r}: use {', '.join(allowed)}"
        )
    if chosen == "known_hosts":
        return export_known_hosts(ca)
    if chosen == "openssh":
        return "".join(f"{line}\n" for line in _openssh_lines(ca))
    if chosen == "authorized_keys":
        return "".join(f"cert-authority {line}\n" for line in _openssh_lines(ca))
    if chosen == "jwks":
        keys = [_jwk(load_public_key(pair.public_key), pair.id) for pair in ca.spec.trusted_keys()]
        return json.dumps({"keys": keys}, indent=2, sort_keys=True) + "\n"
    if ca.spec.type == "jwt":
        return "".join(pair.public_key for pair in ca.spec.trusted_keys())
    return "".join(
        cert.public_bytes(serialization.Encoding.PEM).decode() for cert in trusted_certificates(ca)
    )
