"""OpenSSH certificates: a pure codec for the wire format, signing and verification.

Layer: pure (bytes and keys in, bytes or a dataclass out; no IO, no clock reads). The format is
OpenSSH's ``PROTOCOL.certkeys``; every signature is made and checked by ``cryptography``.

We encode certificates ourselves (ARCHITECTURE.md section 3) because asyncssh can neither write
custom extensions nor show them to the application, and the identity document travels in the
:data:`~bastion.types.identity.SSH_IDENTITY_EXTENSION` extension. The encoder follows what
``ssh-keygen -s`` does, so for Ed25519 (deterministic signatures) the blobs are byte-identical:

* critical options and extensions are sorted by name;
* a flag's data is the empty string; a non-empty value is itself wrapped as an SSH string;
* the ``reserved`` field is empty; RSA signatures use ``rsa-sha2-512``.

The parser only ever raises :class:`~bastion.errors.RemoteProtocolError` on malformed input;
:func:`verify_ssh_certificate` raises :class:`~bastion.errors.AccessDenied` with a precise reason.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from bastion.ca.keys import PrivateKey, PublicKey
from bastion.errors import AccessDenied, BadParameter, RemoteProtocolError
from bastion.types.identity import SSH_IDENTITY_EXTENSION, Identity

__all__ = [
    "DEFAULT_USER_EXTENSIONS",
    "FOREVER",
    "SSHCertType",
    "SSHCertificate",
    "WireReader",
    "check_signature",
    "identity_from_ssh_certificate",
    "parse_key_blob",
    "parse_ssh_certificate",
    "sign_data",
    "sign_ssh_certificate",
    "ssh_host_certificate",
    "ssh_public_key_blob",
    "ssh_user_certificate",
    "to_openssh_line",
    "verify_ssh_certificate",
    "wire_string",
]

SSHCertType = Literal["user", "host"]
FOREVER = 2**64 - 1
"""``valid_before`` of a certificate that never expires (``ssh-keygen -V always:forever``)."""
DEFAULT_USER_EXTENSIONS: Mapping[str, str] = {
    "permit-X11-forwarding": "",
    "permit-agent-forwarding": "",
    "permit-port-forwarding": "",
    "permit-pty": "",
    "permit-user-rc": "",
}
"""The extensions ``ssh-keygen`` puts in a user certificate by default."""

_CERT_TYPE_CODE: Mapping[SSHCertType, int] = {"user": 1, "host": 2}
_ED25519 = "ssh-ed25519"
_ECDSA = "ecdsa-sha2-nistp256"
_RSA = "ssh-rsa"
_CERT_SUFFIX = "-cert-v01@openssh.com"
_MAX_BLOB = 64 * 1024
_KNOWN_USER_CRITICAL = frozenset({"force-command", "source-address", "verify-required"})


# --- wire primitives -------------------------------------------------------------------------


def wire_string(data: bytes | str) -> bytes:
    """An SSH ``string``: uint32 length, then the bytes."""
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def _mpint(value: int) -> bytes:
    if value == 0:
        return wire_string(b"")
    length = (value.bit_length() + 8) // 8  # +8 keeps a zero high bit for positive numbers
    return wire_string(value.to_bytes(length, "big", signed=True))


class WireReader:
    """Cursor over SSH wire data; every short read is a RemoteProtocolError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self._what = what

    def _take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise RemoteProtocolError(f"truncated {self._what}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    @property
    def position(self) -> int:
        return self.pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        return self._take(1)[0]

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self._take(4))[0]
        return value

    def uint64(self) -> int:
        value: int = struct.unpack(">Q", self._take(8))[0]
        return value

    def string(self) -> bytes:
        return self._take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"{self._what}: text is not UTF-8") from None

    def mpint(self) -> int:
        raw = self.string()
        if raw and (raw[0] == 0 and (len(raw) == 1 or raw[1] < 0x80)):
            raise RemoteProtocolError(f"{self._what}: non-minimal mpint")
        return int.from_bytes(raw, "big", signed=True)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise RemoteProtocolError(f"{self._what}: {len(self.data) - self.pos} trailing bytes")


# --- public keys -----------------------------------------------------------------------------


def _key_type(key: PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _ED25519
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _ECDSA
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    raise BadParameter(f"unsupported SSH key type {type(key).__name__}")


def _key_fields(key: PublicKey) -> bytes:
    """The type-specific public fields, as they appear in both key and certificate blobs."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return wire_string(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return wire_string("nistp256") + wire_string(point)
    numbers = key.public_numbers()
    return _mpint(numbers.e) + _mpint(numbers.n)


def ssh_public_key_blob(key: PublicKey) -> bytes:
    """The SSH wire encoding of a plain public key (what ``authorized_keys`` base64-encodes).

    Args:
        key: an Ed25519, ECDSA P-256 or RSA public key.

    Returns:
        The key blob.

    Raises:
        BadParameter: unsupported key type.
    """
    return wire_string(_key_type(key)) + _key_fields(key)


def _read_key_fields(reader: WireReader, key_type: str) -> PublicKey:
    if key_type == _ED25519:
        raw = reader.string()
        if len(raw) != 32:
            raise RemoteProtocolError("ed25519 public key must be 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if key_type == _ECDSA:
        if reader.string() != b"nistp256":
            raise RemoteProtocolError("ecdsa key curve does not match its type")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), reader.string())
    if key_type == _RSA:
        e, n = reader.mpint(), reader.mpint()
        if e < 3 or n.bit_length() < 1024 or n.bit_length() > 16384:
            raise RemoteProtocolError("rsa public key parameters out of range")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise RemoteProtocolError(f"unsupported key type {key_type[:64]!r}")


def parse_key_blob(blob: bytes) -> PublicKey:
    reader = WireReader(blob, "public key")
    key = _read_key_fields(reader, reader.text())
    reader.done()
    return key


# --- signatures ------------------------------------------------------------------------------


def sign_data(ca_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        return wire_string(_ED25519) + wire_string(ca_key.sign(data))
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        _key_type(ca_key.public_key())  # refuses curves other than P-256
        r, s = decode_dss_signature(ca_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return wire_string(_ECDSA) + wire_string(_mpint(r) + _mpint(s))
    return wire_string("rsa-sha2-512") + wire_string(
        ca_key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    )


def check_signature(ca_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` (an SSH signature blob) is valid for ``data`` under ``ca_key``."""
    try:
        reader = WireReader(signature, "signature")
        sig_type, raw = reader.text(), reader.string()
        reader.done()
        if isinstance(ca_key, ed25519.Ed25519PublicKey) and sig_type == _ED25519:
            ca_key.verify(raw, data)
            return True
        if isinstance(ca_key, ec.EllipticCurvePublicKey) and sig_type == _ECDSA:
            inner = WireReader(raw, "ecdsa signature")
            r, s = inner.mpint(), inner.mpint()
            inner.done()
            ca_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            return True
        if isinstance(ca_key, rsa.RSAPublicKey) and sig_type in ("rsa-sha2-256", "rsa-sha2-512"):
            digest = hashes.SHA256() if sig_type == "rsa-sha2-256" else hashes.SHA512()
            ca_key.verify(raw, data, padding.PKCS1v15(), digest)
            return True
    except (InvalidSignature, RemoteProtocolError, ValueError, OverflowError):
        return False
    return False  # unknown or mismatched signature algorithm (including SHA-1 "ssh-rsa")


# --- the certificate -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSHCertificate:
    """A parsed OpenSSH certificate. Times are seconds since the epoch, as on the wire."""

    cert_type: SSHCertType
    public_key: PublicKey
    """The subject's key."""
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    """Exclusive upper bound; :data:`FOREVER` for no expiry."""
    critical_options: dict[str, str]
    """Name -> value; ``""`` for flags."""
    extensions: dict[str, str]
    """Name -> value; ``""`` for flags."""
    nonce: bytes
    signature_key: PublicKey
    """The CA key that signed."""
    signature: bytes
    """The SSH signature blob (algorithm name + signature)."""
    reserved: bytes = b""
    signed_data: bytes = field(default=b"", repr=False, compare=False)
    """Everything the signature covers (the blob minus its final field)."""
    blob: bytes = field(default=b"", repr=False, compare=False)
    """The whole certificate, as received."""

    @property
    def key_type(self) -> str:
        """The certificate type name, e.g. ``ssh-ed25519-cert-v01@openssh.com``."""
        return _key_type(self.public_key) + _CERT_SUFFIX

    @property
    def valid_after_datetime(self) -> datetime:
        """``valid_after`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.valid_after, UTC)

    @property
    def valid_before_datetime(self) -> datetime | None:
        """``valid_before`` as an aware UTC datetime; None means "forever"."""
        if self.valid_before >= 2**63:
            return None
        return datetime.fromtimestamp(self.valid_before, UTC)


def _epoch(value: datetime | int, what: str) -> int:
    if isinstance(value, int):
        seconds = value
    else:
        if value.tzinfo is None:
            raise BadParameter(f"{what} must be timezone-aware")
        seconds = int(value.timestamp())
    if not 0 <= seconds <= FOREVER:
        raise BadParameter(f"{what} out of range")
    return seconds


def _encode_options(options: Mapping[str, str]) -> bytes:
    out = bytearray()
    for name in sorted(options, key=lambda n: n.encode()):
        value = options[name]
        out += wire_string(name) + wire_string(wire_string(value) if value else b"")
    return bytes(out)


def sign_ssh_certificate(
    ca_private_key: PrivateKey,
    subject_public_key: PublicKey,
    *,
    cert_type: SSHCertType,
    serial: int,
    key_id: str,
    principals: Sequence[str],
    valid_after: datetime | int,
    valid_before: datetime | int,
    critical_options: Mapping[str, str] | None = None,
    extensions: Mapping[str, str] | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Build and sign an OpenSSH certificate.

    Args:
        ca_private_key: the CA key that signs (Ed25519, ECDSA P-256 or RSA).
        subject_public_key: the key being certified.
        cert_type: ``"user"`` or ``"host"``.
        serial: 0 .. 2**64-1.
        key_id: free-form id logged by sshd (we use the user name or host id).
        principals: logins (user certs) or host names (host certs).
        valid_after: start of validity (aware datetime or epoch seconds).
        valid_before: end of validity, exclusive (aware datetime, epoch seconds or FOREVER).
        critical_options: name -> value (``""`` for flags); none by default.
        extensions: name -> value; :data:`DEFAULT_USER_EXTENSIONS` for user certs by default,
            none for host certs.
        nonce: 32 random bytes by default; pass one only to reproduce a certificate.

    Returns:
        The binary certificate blob.

    Raises:
        BadParameter: out-of-range serial or times, empty validity, unsupported key type.
    """
    if cert_type not in _CERT_TYPE_CODE:
        raise BadParameter(f"certificate type must be 'user' or 'host', not {cert_type!r}")
    if not 0 <= serial <= FOREVER:
        raise BadParameter("serial must fit in 64 bits")
    after, before = _epoch(valid_after, "valid_after"), _epoch(valid_before, "valid_before")
    if after >= before:
        raise BadParameter("certificate validity is empty: valid_after must precede valid_before")
    if extensions is None:
        extensions = DEFAULT_USER_EXTENSIONS if cert_type == "user" else {}
    body = (
        wire_string(_key_type(subject_public_key) + _CERT_SUFFIX)
        + wire_string(os.urandom(32) if nonce is None else nonce)
        + _key_fields(subject_public_key)
        + struct.pack(">QI", serial, _CERT_TYPE_CODE[cert_type])
        + wire_string(key_id)
        + wire_string(b"".join(wire_string(p) for p in principals))
        + struct.pack(">QQ", after, before)
        + wire_string(_encode_options(critical_options or {}))
        + wire_string(_encode_options(extensions))
        + wire_string(b"")
        + wire_string(ssh_public_key_blob(ca_private_key.public_key()))
    )
    return body + wire_string(sign_data(ca_private_key, body))


def to_openssh_line(blob: bytes, comment: str = "") -> str:
    """Format a certificate blob as an OpenSSH ``*-cert.pub`` line.

    Args:
        blob: the binary certificate.
        comment: optional trailing comment.

    Returns:
        ``<type> <base64> [comment]``, no trailing newline.

    Raises:
        RemoteProtocolError: the blob does not start with a certificate type name.
    """
    type_name = WireReader(blob, "certificate").text()
    if not type_name.endswith(_CERT_SUFFIX):
        raise RemoteProtocolError(f"not a certificate type: {type_name[:64]!r}")
    line = f"{type_name} {base64.b64encode(blob).decode()}"
    comment = comment.replace("\n", " ").strip()
    return f"{line} {comment}" if comment else line


def _decode_line(line: str) -> bytes:
    parts = line.strip().split()
    if len(parts) < 2:
        raise RemoteProtocolError("certificate line must be '<type> <base64> [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("certificate line is not valid base64") from None
    if WireReader(blob, "certificate").text() != parts[0]:
        raise RemoteProtocolError("certificate line type does not match its blob")
    return blob


def _parse_options(raw: bytes, what: str) -> dict[str, str]:
    reader = WireReader(raw, what)
    options: dict[str, str] = {}
    while reader.position < len(raw):
        name, data = reader.text(), reader.string()
        if name in options:
            raise RemoteProtocolError(f"{what}: duplicate {name[:64]!r}")
        value = ""
        if data:
            inner = WireReader(data, what)
            value = inner.text()
            inner.done()
        options[name] = value
    return options


def _parse_principals(raw: bytes) -> tuple[str, ...]:
    reader = WireReader(raw, "principals")
    principals: list[str] = []
    while reader.position < len(raw):
        principals.append(reader.text())
    return tuple(principals)


def parse_ssh_certificate(blob_or_line: bytes | str) -> SSHCertificate:
    """Parse an OpenSSH certificate (binary blob, or a ``*-cert.pub`` line as str or bytes).

    Parsing does not verify anything: call :func:`verify_ssh_certificate`.

    Args:
        blob_or_line: the certificate.

    Returns:
        The decoded certificate.

    Raises:
        RemoteProtocolError: malformed input (the only exception this function raises).
    """
    if isinstance(blob_or_line, bytes) and blob_or_line[:1].isalpha():
        try:
            blob_or_line = blob_or_line.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("certificate line is not ASCII") from None
    blob = _decode_line(blob_or_line) if isinstance(blob_or_line, str) else blob_or_line
    if len(blob) > _MAX_BLOB:
        raise RemoteProtocolError("certificate too large")
    try:
        return _parse_blob(blob)
    except (ValueError, TypeError, OverflowError, UnsupportedAlgorithm) as exc:
        # cryptography rejects e.g. a point not on the curve
        raise RemoteProtocolError(f"invalid key in certificate: {exc}") from None


def _parse_blob(blob: bytes) -> SSHCertificate:
    reader = WireReader(blob, "certificate")
    type_name = reader.text()
    if not type_name.endswith(_CERT_SUFFIX):
        raise RemoteProtocolError(f"not a certificate type: {type_name[:64]!r}")
    nonce = reader.string()
    public_key = _read_key_fields(reader, type_name[: -len(_CERT_SUFFIX)])
    serial, type_code = reader.uint64(), reader.uint32()
    cert_type: SSHCertType | None = {1: "user", 2: "host"}.get(type_code)  # type: ignore[assignment]
    if cert_type is None:
        raise RemoteProtocolError(f"unknown certificate type code {type_code}")
    key_id = reader.text()
    principals = _parse_principals(reader.string())
    valid_after, valid_before = reader.uint64(), reader.uint64()
    critical_options = _parse_options(reader.string(), "critical options")
    extensions = _parse_options(reader.string(), "extensions")
    reserved = reader.string()
    signature_key = parse_key_blob(reader.string())
    signed_end = reader.position
    signature = reader.string()
    reader.done()
    return SSHCertificate(
        cert_type=cert_type,
        public_key=public_key,
        serial=serial,
        key_id=key_id,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical_options,
        extensions=extensions,
        nonce=nonce,
        signature_key=signature_key,
        signature=signature,
        reserved=reserved,
        signed_data=blob[:signed_end],
        blob=blob,
    )


# --- verification ----------------------------------------------------------------------------


def _check_source_address(value: str, client_address: str | None) -> None:
    if client_address is None:
        raise AccessDenied(
            f"certificate is pinned to source-address {value} and the client address is unknown"
        )
    try:
        address = ipaddress.ip_address(client_address)
        networks = [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",")]
    except ValueError:
        raise AccessDenied(f"cannot check source-address {value!r}") from None
    if not any(address in network for network in networks):
        raise AccessDenied(f"client address {client_address} is not in source-address {value}")


def verify_ssh_certificate(
    cert: SSHCertificate,
    trusted_ca_public_keys: Iterable[PublicKey],
    now: datetime,
    *,
    cert_type: SSHCertType,
    principal: str | None = None,
    client_address: str | None = None,
) -> None:
    """Check a certificate the way sshd would, failing closed.

    Args:
        cert: a parsed certificate.
        trusted_ca_public_keys: the CA keys of exactly one purpose (user or host SSH CA).
        now: the current time (from a Clock).
        cert_type: the type the caller expects; the other type is refused.
        principal: the login (user certs) or host name (host certs) requested; None skips the
            principal check.
        client_address: the peer IP, checked against a ``source-address`` critical option.
            None while the certificate carries that option means "refuse".

    Raises:
        AccessDenied: with the reason: unknown CA, bad signature, wrong type, not yet valid,
            expired, principal not listed, unsupported critical option, source address.
    """
    ca_blob = ssh_public_key_blob(cert.signature_key)
    if not any(ssh_public_key_blob(k) == ca_blob for k in trusted_ca_public_keys):
        raise AccessDenied("certificate is signed by an unknown CA")
    if not cert.signed_data or not check_signature(
        cert.signature_key, cert.signature, cert.signed_data
    ):
        raise AccessDenied("certificate has a bad signature")
    if cert.cert_type != cert_type:
        raise AccessDenied(f"expected a {cert_type} certificate, got a {cert.cert_type} one")
    seconds = int(now.timestamp())
    if seconds < cert.valid_after:
        raise AccessDenied(f"certificate is not yet valid (valid after {cert.valid_after})")
    if seconds >= cert.valid_before:
        raise AccessDenied(f"certificate expired at {cert.valid_before_datetime}")
    if principal is not None:
        if not cert.principals:
            raise AccessDenied("certificate lists no principals")
        if principal not in cert.principals:
            raise AccessDenied(f"principal {principal!r} is not listed in the certificate")
    for name, value in cert.critical_options.items():
        if cert.cert_type == "host" or name not in _KNOWN_USER_CRITICAL:
            raise AccessDenied(f"unsupported critical option {name!r}")
        if name == "source-address":
            _check_source_address(value, client_address)


# --- Bastion identities ----------------------------------------------------------------------


def ssh_user_certificate(
    ca_key: PrivateKey,
    subject_pub: PublicKey,
    identity: Identity,
    serial: int,
    valid_after: datetime,
    *,
    extensions: Mapping[str, str] | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Issue a user certificate that carries a Bastion identity.

    Principals are ``identity.logins``; key id is the user name; the identity document goes in
    the :data:`SSH_IDENTITY_EXTENSION` extension; ``identity.pinned_ip`` becomes the
    ``source-address`` critical option; the certificate expires at ``identity.expires``.

    Args:
        ca_key: the user SSH CA signing key.
        subject_pub: the user's public key.
        identity: what the certificate asserts.
        serial: certificate serial.
        valid_after: start of validity (usually now minus a small skew allowance).
        extensions: permissions other than the identity (default: ssh-keygen's user defaults).
        nonce: for reproducible output in tests only.

    Returns:
        The certificate blob.

    Raises:
        BadParameter: the identity has no logins (an empty principal list would mean "any
            login" to OpenSSH) or an empty validity.
    """
    if not identity.logins:
        raise BadParameter(f"user {identity.user!r} has no logins: refusing an SSH certificate")
    exts = dict(DEFAULT_USER_EXTENSIONS if extensions is None else extensions)
    exts[SSH_IDENTITY_EXTENSION] = identity.encode().decode()
    critical = {"source-address": identity.pinned_ip} if identity.pinned_ip else {}
    return sign_ssh_certificate(
        ca_key,
        subject_pub,
        cert_type="user",
        serial=serial,
        key_id=identity.user,
        principals=identity.logins,
        valid_after=valid_after,
        valid_before=identity.expires,
        critical_options=critical,
        extensions=exts,
        nonce=nonce,
    )


def identity_from_ssh_certificate(cert: SSHCertificate) -> Identity:
    """Read the Bastion identity out of a (verified) certificate.

    Args:
        cert: a certificate already checked by :func:`verify_ssh_certificate`.

    Returns:
        The identity document.

    Raises:
        AccessDenied: no identity extension, an unreadable document, or a document that
            disagrees with the certificate (user vs key id, logins vs principals).
    """
    raw = cert.extensions.get(SSH_IDENTITY_EXTENSION)
    if raw is None:
        raise AccessDenied("certificate carries no identity extension")
    try:
        identity = Identity.decode(raw)
    except ValueError as exc:
        raise AccessDenied(f"certificate identity is unreadable: {exc}") from None
    if cert.cert_type == "user":
        if identity.user != cert.key_id:
            raise AccessDenied("certificate identity user does not match its key id")
        if set(identity.logins) != set(cert.principals):
            raise AccessDenied("certificate identity logins do not match its principals")
    return identity


def ssh_host_certificate(
    ca_key: PrivateKey,
    subject_pub: PublicKey,
    host_id: str,
    principals: Sequence[str],
    serial: int,
    valid_after: datetime,
    valid_before: datetime,
    *,
    nonce: bytes | None = None,
) -> bytes:
    """Issue a host certificate.

    Args:
        ca_key: the host SSH CA signing key.
        subject_pub: the host's public key.
        host_id: the node id; used as key id and always the first principal.
        principals: more names: hostname, addresses.
        serial: certificate serial.
        valid_after: start of validity.
        valid_before: end of validity.
        nonce: for reproducible output in tests only.

    Returns:
        The certificate blob.

    Raises:
        BadParameter: empty host id or empty validity.
    """
    if not host_id:
        raise BadParameter("a host certificate needs a host id")
    names = list(dict.fromkeys([host_id, *principals]))
    return sign_ssh_certificate(
        ca_key,
        subject_pub,
        cert_type="host",
        serial=serial,
        key_id=host_id,
        principals=names,
        valid_after=valid_after,
        valid_before=valid_before,
        nonce=nonce,
    )
