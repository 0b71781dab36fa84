"""X.509 certificates for Bastion identities: CA, user and host certificates, and verification.

Layer: pure over ``cryptography`` (keys and times in, certificates out; no IO, no clock reads).

A user certificate has Subject ``CN=<user>, O=<cluster>`` and carries the identity document
(:class:`~bastion.types.identity.Identity`) in a non-critical extension with OID
:data:`~bastion.types.identity.IDENTITY_OID`; the extension value is the document as a DER
UTF8String. Leaf certificates always have ``BasicConstraints(ca=False)`` and are refused if they
claim otherwise: a certificate is never a CA (ARCHITECTURE.md section 6, principle 4). Each
purpose (tls_user, tls_host, db) has its own CA, and :func:`verify_certificate_chain` is given
only the anchors of one purpose.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from bastion.ca.keys import PrivateKey, PublicKey
from bastion.errors import AccessDenied, BadParameter
from bastion.types.identity import IDENTITY_OID, Identity

__all__ = [
    "IDENTITY_EXTENSION_OID",
    "identity_from_certificate",
    "issue_host_certificate",
    "issue_user_certificate",
    "self_signed_ca",
    "subject_common_name",
    "VerifiedLeaf",
    "VerifiedLeafCache",
    "verify_certificate_chain",
    "verify_leaf",
]

IDENTITY_EXTENSION_OID = ObjectIdentifier(IDENTITY_OID)
"""The identity extension's OID as a ``cryptography`` object."""
_UTF8STRING = 0x0C
_CLOCK_SKEW = timedelta(minutes=1)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    """Ed25519 signs the message itself; ECDSA and RSA sign a SHA-256 digest."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _der_utf8(text: bytes) -> bytes:
    length = len(text)
    if length < 0x80:
        header = bytes([_UTF8STRING, length])
    else:
        size = (length.bit_length() + 7) // 8
        header = bytes([_UTF8STRING, 0x80 | size]) + length.to_bytes(size, "big")
    return header + text


def _undo_der_utf8(value: bytes) -> bytes:
    """Inverse of :func:`_der_utf8`; ValueError on anything but one definite-length UTF8String."""
    if len(value) < 2 or value[0] != _UTF8STRING:
        raise ValueError("identity extension is not a UTF8String")
    first = value[1]
    if first < 0x80:
        length, start = first, 2
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or len(value) < 2 + size:
            raise ValueError("identity extension has a bad length")
        length, start = int.from_bytes(value[2 : 2 + size], "big"), 2 + size
    if start + length != len(value):
        raise ValueError("identity extension has a bad length")
    return value[start:]


MAX_COMMON_NAME = 64
"""X.509's upper bound for a Subject CN (RFC 5280 ub-common-name)."""


def subject_common_name(name: str) -> str:
    """The Subject CN for a user or host ``name``: the name, cut at 64 characters (an SSO user
    ``connector:long.name@example.com`` can be longer). The identity extension, not the CN,
    carries the full name; verification compares the CN with this same cut."""
    return name[:MAX_COMMON_NAME]


def _name(common_name: str, cluster: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, subject_common_name(common_name)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
        ]
    )


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise BadParameter(f"{what} must be timezone-aware")
    return value


def self_signed_ca(
    private_key: PrivateKey,
    common_name: str,
    cluster: str,
    valid_for: timedelta,
    *,
    now: datetime,
) -> x509.Certificate:
    """Create a self-signed CA certificate (path length 0: it signs leaves only).

    Args:
        private_key: the CA key.
        common_name: Subject CN; make it name the purpose (e.g. ``example tls_user CA``).
        cluster: Subject O.
        valid_for: lifetime from ``now``.
        now: the current time (from a Clock).

    Returns:
        The CA certificate.

    Raises:
        BadParameter: naive datetime or non-positive lifetime.
    """
    if valid_for <= timedelta(0):
        raise BadParameter("CA lifetime must be positive")
    start = _aware(now, "now") - _CLOCK_SKEW
    name = _name(common_name, cluster)
    public_key = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(private_key, _hash_for(private_key))


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_public_key: PublicKey,
    subject: x509.Name,
    not_before: datetime,
    not_after: datetime,
    serial: int | None,
) -> x509.CertificateBuilder:
    if ca_key.public_key() != ca_cert.public_key():
        raise BadParameter("CA private key does not match the CA certificate")
    start = _aware(not_before, "not_before")
    if _aware(not_after, "not_after") <= start:
        raise BadParameter("certificate validity is empty: not_after must follow not_before")
    if not_after > ca_cert.not_valid_after_utc:
        raise BadParameter("certificate would outlive its CA: rotate the CA or shorten the TTL")
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(subject_public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(subject_public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False
        )
    )


def _identity_extension(identity: Identity) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(IDENTITY_EXTENSION_OID, _der_utf8(identity.encode()))


def _cluster_of(ca_cert: x509.Certificate) -> str:
    values = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else ""


def issue_user_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_public_key: PublicKey,
    identity: Identity,
    *,
    not_before: datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue a client certificate for a user (or bot) identity.

    Args:
        ca_cert: the tls_user (or db) CA certificate.
        ca_key: its private key.
        subject_public_key: the user's public key.
        identity: what the certificate asserts; ``identity.expires`` is ``not_after``.
        not_before: start of validity.
        serial: certificate serial; random 159-bit by default.

    Returns:
        The certificate (``CN=user, O=cluster``, clientAuth, identity extension).

    Raises:
        BadParameter: empty validity, a TTL past the CA's expiry, a cluster other than the
            CA's, or a key that does not match the CA certificate.
    """
    if identity.cluster != _cluster_of(ca_cert):
        raise BadParameter(
            f"identity is for cluster {identity.cluster!r}, CA is {_cluster_of(ca_cert)!r}"
        )
    builder = _leaf_builder(
        ca_cert,
        ca_key,
        subject_public_key,
        _name(identity.user, identity.cluster),
        not_before,
        identity.expires,
        serial,
    )
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    ).add_extension(_identity_extension(identity), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def issue_host_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_public_key: PublicKey,
    host_id: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IPAddress],
    not_before: datetime,
    not_after: datetime,
    identity: Identity | None = None,
) -> x509.Certificate:
    """Issue a server (and client) certificate for a host or service.

    Args:
        ca_cert: the tls_host (or db) CA certificate.
        ca_key: its private key.
        subject_public_key: the host's public key.
        host_id: Subject CN and the first DNS SAN.
        dns_names: more DNS SANs.
        ip_addresses: IP SANs.
        not_before: start of validity.
        not_after: end of validity.
        identity: optional host identity document to embed.

    Returns:
        The certificate (serverAuth + clientAuth, SANs).

    Raises:
        BadParameter: empty host id, an invalid IP address, empty validity or a TTL past the
            CA's expiry.
    """
    if not host_id:
        raise BadParameter("a host certificate needs a host id")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise BadParameter(f"invalid IP address for host {host_id!r}: {exc}") from None
    sans: list[x509.GeneralName] = [
        x509.DNSName(name) for name in dict.fromkeys([host_id, *dns_names])
    ]
    sans += [x509.IPAddress(ip) for ip in ips]
    builder = _leaf_builder(
        ca_cert,
        ca_key,
        subject_public_key,
        _name(host_id, _cluster_of(ca_cert)),
        not_before,
        not_after,
        None,
    )
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        critical=False,
    ).add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if identity is not None:
        builder = builder.add_extension(_identity_extension(identity), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """Read the identity document out of a (verified) certificate.

    Args:
        cert: the certificate.

    Returns:
        The identity.

    Raises:
        AccessDenied: missing or unreadable identity extension, or a document whose user does
            not match the Subject CN.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise AccessDenied("certificate is missing the identity extension") from None
    except ValueError as exc:  # duplicate or malformed extensions
        raise AccessDenied(f"certificate extensions are malformed: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise AccessDenied("identity extension has an unexpected type")
    try:
        identity = Identity.decode(_undo_der_utf8(value.value))
    except ValueError as exc:
        raise AccessDenied(f"certificate identity is unreadable: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if identity.kind != "host" and (not cns or cns[0].value != subject_common_name(identity.user)):
        raise AccessDenied("certificate identity user does not match its subject")
    return identity


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    return bool((constraints and constraints.ca) or (usage and usage.key_cert_sign))


def _find_issuer(
    cert: x509.Certificate, trusted_ca_certs: Iterable[x509.Certificate]
) -> x509.Certificate:
    candidates = [ca for ca in trusted_ca_certs if ca.subject == cert.issuer]
    if not candidates:
        raise AccessDenied(
            f"certificate is issued by an unknown CA ({cert.issuer.rfc4514_string()})"
        )
    for ca in candidates:
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return ca
    raise AccessDenied("certificate has a bad signature")


def verify_certificate_chain(
    cert: x509.Certificate,
    trusted_ca_certs: Iterable[x509.Certificate],
    now: datetime,
    *,
    usage: ObjectIdentifier | None = None,
) -> Identity:
    """Verify a leaf certificate against the CA certificates of one purpose.

    Args:
        cert: the presented leaf certificate.
        trusted_ca_certs: CA certificates of exactly one purpose (active and additional
            trusted keys during rotation).
        now: the current time (from a Clock).
        usage: an extended key usage the certificate must have (e.g. clientAuth); None skips.

    Returns:
        The identity the certificate carries.

    Raises:
        AccessDenied: unknown issuer, bad signature, issuer not a CA or expired, certificate is
            a CA, not yet valid, expired, missing usage, missing identity extension, or an
            identity for another cluster.
    """
    return verify_leaf(cert, trusted_ca_certs, now, usage=usage).identity


@dataclass(frozen=True, slots=True)
class VerifiedLeaf:
    """A leaf certificate :func:`verify_leaf` accepted: its identity, and the times between
    which that verification holds (the certificate's, its CA's and the identity's validity)."""

    identity: Identity
    not_before: datetime
    not_after: datetime

    def valid_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after


def verify_leaf(
    cert: x509.Certificate,
    trusted_ca_certs: Iterable[x509.Certificate],
    now: datetime,
    *,
    usage: ObjectIdentifier | None = None,
) -> VerifiedLeaf:
    """:func:`verify_certificate_chain`, also returning when the verification holds (for
    :class:`VerifiedLeafCache`).

    Raises:
        AccessDenied: as :func:`verify_certificate_chain`.
    """
    ca = _find_issuer(cert, trusted_ca_certs)
    if not _is_ca(ca):
        raise AccessDenied("issuer is not a CA certificate")
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise AccessDenied("issuing CA certificate is outside its validity period")
    if _is_ca(cert):
        raise AccessDenied("certificate is a CA: leaf certificates only")
    if now < cert.not_valid_before_utc:
        raise AccessDenied(f"certificate is not yet valid (until {cert.not_valid_before_utc})")
    if now > cert.not_valid_after_utc:
        raise AccessDenied(f"certificate expired at {cert.not_valid_after_utc}")
    if usage is not None:
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            ekus = x509.ExtendedKeyUsage([])
        if usage not in ekus:
            raise AccessDenied(f"certificate lacks extended key usage {usage.dotted_string}")
    identity = identity_from_certificate(cert)
    if identity.cluster != _cluster_of(ca):
        raise AccessDenied(f"certificate identity is for another cluster ({identity.cluster!r})")
    if now > identity.expires:
        raise AccessDenied(f"certificate identity expired at {identity.expires}")
    return VerifiedLeaf(
        identity,
        max(ca.not_valid_before_utc, cert.not_valid_before_utc),
        min(ca.not_valid_after_utc, cert.not_valid_after_utc, identity.expires),
    )


class VerifiedLeafCache:
    """Leaf certificates :func:`verify_leaf` accepted, by a key holding their exact DER bytes
    (and whatever else chose the trust anchors and the checks): a client that reconnects
    with the same certificate is not parsed and signature-checked again. An entry is used
    only within its :class:`VerifiedLeaf` validity; :meth:`clear` it when the trusted CA set
    changes. Bounded: the oldest entry goes first."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max_entries
        self._items: OrderedDict[Hashable, VerifiedLeaf] = OrderedDict()  # oldest out in O(1)

    def get(self, key: Hashable, now: datetime) -> Identity | None:
        """The identity of a certificate verified before and still valid at ``now``."""
        leaf = self._items.get(key)
        if leaf is None or not leaf.valid_at(now):
            return None
        return leaf.identity

    def put(self, key: Hashable, leaf: VerifiedLeaf) -> None:
        self._items.pop(key, None)
        while len(self._items) >= self._max:
            self._items.popitem(last=False)
        self._items[key] = leaf

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
