"""OpenSSH key revocation lists (KRLs): a pure codec, a revocation check and SSHSIG signatures.

Layer: pure (bytes and keys in, bytes or a dataclass out; no IO, no clock reads). This is how
locks reach *agentless* OpenSSH nodes: sshd reads the file named by ``RevokedKeys`` on every
public key authentication, so replacing that file revokes certificates without restarting sshd.

The format is OpenSSH's ``PROTOCOL.krl`` (all integers big-endian, ``string`` = uint32 length +
bytes)::

    header   uint64 KRL_MAGIC ("SSHKRL\\n\\0")   uint32 format version (1)
             uint64 krl_version                  uint64 generated_date (epoch seconds)
             uint64 flags (0)                    string reserved        string comment
    sections byte section_type, string section_data   (repeated until the end)

    1    KRL_SECTION_CERTIFICATES    string ca_key (blob; empty = any CA), string reserved,
                                     then sub-sections: byte type, string data
         0x20 SERIAL_LIST            uint64 serial ...            (serial 0 cannot be revoked)
         0x21 SERIAL_RANGE           uint64 lo, uint64 hi
         0x22 SERIAL_BITMAP          uint64 offset, mpint bitmap (bit i = serial offset + i)
         0x23 KEY_ID                 string key_id ...
         0x39 EXTENSION              string name, bool critical, string contents
    2    KRL_SECTION_EXPLICIT_KEY    string public_key_blob ...
    3    KRL_SECTION_FINGERPRINT_SHA1    string sha1(blob) ...   (20 bytes each)
    5    KRL_SECTION_FINGERPRINT_SHA256  string sha256(blob) ... (32 bytes each)
    255  KRL_SECTION_EXTENSION       string name, bool critical, string contents
    4    KRL_SECTION_SIGNATURE       byte 4, string signature_key, string signature -- NOT framed
                                     like the others; signs everything from the magic through
                                     signature_key; only signatures may follow a signature.

**Signatures.** The embedded ``KRL_SECTION_SIGNATURE`` is legacy: OpenSSH <= 9.3 verifies it,
but OpenSSH >= 9.4 *refuses to load* a KRL that contains one (PROTOCOL.krl says so and
recommends SSHSIG instead), which would make sshd refuse every key. So Bastion publishes KRLs
without an embedded signature and signs them out of band with SSHSIG (``ssh-keygen -Y sign``
format, namespace :data:`KRL_SIGNATURE_NAMESPACE`) under the SSH user CA:
:func:`sign_krl` / :func:`verify_krl_signature`. An operator can check one by hand with
``ssh-keygen -Y check-novalidate -n bastion-krl -s krl.sig < krl``. :func:`build_krl` can still
embed a signature (``embed_signature_key``) for old OpenSSH releases and the parser verifies
embedded signatures the way OpenSSH 9.2 does.

:func:`parse_krl` only ever raises :class:`~bastion.errors.RemoteProtocolError` on malformed
input (including an embedded signature that does not verify).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bastion.ca.keys import PrivateKey, PublicKey
from bastion.ca.sshcert import (
    SSHCertificate,
    WireReader,
    check_signature,
    parse_key_blob,
    sign_data,
    ssh_public_key_blob,
    wire_string,
)
from bastion.errors import AccessDenied, BadParameter, RemoteProtocolError

__all__ = [
    "KRL",
    "KRL_MAGIC",
    "KRL_SIGNATURE_NAMESPACE",
    "MAX_KRL_SIZE",
    "RevokedCertificates",
    "build_krl",
    "parse_krl",
    "sign_krl",
    "verify_krl_signature",
]

KRL_MAGIC = b"SSHKRL\n\0"
KRL_FORMAT_VERSION = 1
KRL_SIGNATURE_NAMESPACE = "bastion-krl"
"""SSHSIG namespace of a Bastion KRL signature (keeps the signature from meaning anything else)."""
MAX_KRL_SIZE = 16 * 1024 * 1024
"""Refuse bigger inputs (also bounds the serial bitmap expansion)."""

_SECTION_CERTIFICATES = 1
_SECTION_EXPLICIT_KEY = 2
_SECTION_FINGERPRINT_SHA1 = 3
_SECTION_SIGNATURE = 4
_SECTION_FINGERPRINT_SHA256 = 5
_SECTION_EXTENSION = 255
_CERT_SERIAL_LIST = 0x20
_CERT_SERIAL_RANGE = 0x21
_CERT_SERIAL_BITMAP = 0x22
_CERT_KEY_ID = 0x23
_CERT_EXTENSION = 0x39
_U64 = 2**64 - 1
_SSHSIG_MAGIC = b"SSHSIG"
_SSHSIG_HASH = "sha512"
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"


@dataclass(frozen=True, slots=True)
class RevokedCertificates:
    """What one ``KRL_SECTION_CERTIFICATES`` revokes under one CA key."""

    ca_key: bytes
    """The CA's SSH public key blob; ``b""`` means certificates of any CA."""
    serials: frozenset[int] = frozenset()
    serial_ranges: tuple[tuple[int, int], ...] = ()
    """Inclusive ``(lo, hi)`` ranges."""
    key_ids: frozenset[str] = frozenset()

    def revokes(self, cert: SSHCertificate) -> bool:
        """True when ``cert`` is under this CA and its serial or key id is listed."""
        if self.ca_key and self.ca_key != ssh_public_key_blob(cert.signature_key):
            return False
        if cert.key_id in self.key_ids or cert.serial in self.serials:
            return True
        return any(lo <= cert.serial <= hi for lo, hi in self.serial_ranges)


@dataclass(frozen=True, slots=True)
class KRL:
    """A parsed KRL. ``generated`` is seconds since the epoch, as on the wire."""

    version: int
    generated: int
    comment: str = ""
    certificates: tuple[RevokedCertificates, ...] = ()
    explicit_keys: frozenset[bytes] = frozenset()
    """Plain public key blobs revoked outright."""
    sha1_fingerprints: frozenset[bytes] = frozenset()
    sha256_fingerprints: frozenset[bytes] = frozenset()
    signature_keys: tuple[bytes, ...] = field(default=(), compare=False)
    """Key blobs of embedded (legacy) signatures, each verified by :func:`parse_krl`."""

    def key_revoked(self, key: PublicKey) -> bool:
        """True when the plain ``key`` is revoked explicitly or by fingerprint."""
        blob = ssh_public_key_blob(key)
        return (
            blob in self.explicit_keys
            or hashlib.sha256(blob).digest() in self.sha256_fingerprints
            or hashlib.sha1(blob, usedforsecurity=False).digest() in self.sha1_fingerprints
        )

    def is_revoked(self, cert: SSHCertificate) -> bool:
        """What sshd decides: the certificate, its key or its CA key is revoked."""
        if any(section.revokes(cert) for section in self.certificates):
            return True
        return self.key_revoked(cert.public_key) or self.key_revoked(cert.signature_key)


# --- building ---------------------------------------------------------------------------------


def _cert_section(ca_blob: bytes, key_ids: Sequence[str], serials: Sequence[int]) -> bytes:
    body = wire_string(ca_blob) + wire_string(b"")
    if serials:
        body += bytes([_CERT_SERIAL_LIST]) + wire_string(
            b"".join(struct.pack(">Q", s) for s in serials)
        )
    if key_ids:
        body += bytes([_CERT_KEY_ID]) + wire_string(b"".join(wire_string(k) for k in key_ids))
    return bytes([_SECTION_CERTIFICATES]) + wire_string(body)


def build_krl(
    ca_public_keys: Sequence[PublicKey],
    key_ids: Iterable[str] = (),
    serials: Iterable[int] = (),
    *,
    version: int,
    generated: int,
    comment: str = "",
    explicit_keys: Iterable[PublicKey] = (),
    embed_signature_key: PrivateKey | None = None,
) -> bytes:
    """Encode a KRL revoking certificates by key id and serial under each CA key.

    One certificate section is written per CA key (the active and, during a rotation, the other
    trusted keys), each listing the same key ids and serials. Output is deterministic: key ids
    and serials are sorted and de-duplicated, empty sub-sections are left out.

    Args:
        ca_public_keys: the user CA keys the revocations apply to (at least one when any key id
            or serial is given).
        key_ids: certificate key ids to revoke (Bastion puts the user name there).
        serials: certificate serials to revoke (1 .. 2**64-1).
        version: ``krl_version``; must grow with every new KRL.
        generated: ``generated_date``, seconds since the epoch.
        comment: free text shown by ``ssh-keygen -Q -l``.
        explicit_keys: plain public keys revoked outright (whatever certifies them).
        embed_signature_key: add a legacy ``KRL_SECTION_SIGNATURE``. OpenSSH >= 9.4 refuses
            such KRLs; prefer :func:`sign_krl`.

    Returns:
        The KRL bytes, ready for sshd's ``RevokedKeys``.

    Raises:
        BadParameter: a serial or the version is out of range, or revocations without a CA.
    """
    ids = sorted(set(key_ids))
    serial_list = sorted(set(serials))
    if any(not 0 < s <= _U64 for s in serial_list):
        raise BadParameter("KRL serials must be between 1 and 2**64-1 (serial 0 is not revocable)")
    if not (0 <= version <= _U64 and 0 <= generated <= _U64):
        raise BadParameter("KRL version and generated date must fit in 64 bits")
    if (ids or serial_list) and not ca_public_keys:
        raise BadParameter("revoking certificates needs the CA key they were signed with")
    out = bytearray(KRL_MAGIC)
    out += struct.pack(">IQQQ", KRL_FORMAT_VERSION, version, generated, 0)
    out += wire_string(b"") + wire_string(comment)
    if ids or serial_list:
        for blob in sorted({ssh_public_key_blob(k) for k in ca_public_keys}):
            out += _cert_section(blob, ids, serial_list)
    explicit = sorted({ssh_public_key_blob(k) for k in explicit_keys})
    if explicit:
        out += bytes([_SECTION_EXPLICIT_KEY]) + wire_string(
            b"".join(wire_string(b) for b in explicit)
        )
    if embed_signature_key is not None:
        out += bytes([_SECTION_SIGNATURE])
        out += wire_string(ssh_public_key_blob(embed_signature_key.public_key()))
        out += wire_string(sign_data(embed_signature_key, bytes(out)))
    return bytes(out)


# --- parsing ----------------------------------------------------------------------------------


def _parse_extension(data: bytes, what: str) -> None:
    reader = WireReader(data, what)
    name = reader.text()
    critical = reader.byte()
    reader.string()
    if reader.remaining:
        raise RemoteProtocolError(f"{what}: trailing bytes")
    if critical:
        raise RemoteProtocolError(f"unsupported critical KRL extension {name[:64]!r}")


def _parse_bitmap(reader: WireReader, serials: set[int]) -> None:
    offset = reader.uint64()
    raw = reader.string()
    if raw and raw[0] & 0x80:
        raise RemoteProtocolError("KRL serial bitmap is negative")
    bits = int.from_bytes(raw, "big")
    index = 0
    while bits:
        if bits & 1:
            serial = offset + index
            if not 0 < serial <= _U64:
                raise RemoteProtocolError("KRL serial bitmap outside 1 .. 2**64-1")
            serials.add(serial)
        bits >>= 1
        index += 1


def _parse_cert_section(data: bytes) -> RevokedCertificates:
    reader = WireReader(data, "KRL certificate section")
    ca_key = reader.string()
    if ca_key:
        parse_key_blob(ca_key)  # RemoteProtocolError for garbage or unsupported CA types
    reader.string()  # reserved
    serials: set[int] = set()
    ranges: list[tuple[int, int]] = []
    key_ids: set[str] = set()
    while reader.remaining:
        kind, sub = reader.byte(), WireReader(reader.string(), "KRL certificate sub-section")
        if kind == _CERT_SERIAL_LIST:
            while sub.remaining:
                serial = sub.uint64()
                if serial == 0:
                    raise RemoteProtocolError("KRL revokes serial 0")
                serials.add(serial)
        elif kind == _CERT_SERIAL_RANGE:
            lo, hi = sub.uint64(), sub.uint64()
            if lo == 0 or lo > hi:
                raise RemoteProtocolError("KRL serial range is empty or starts at 0")
            ranges.append((lo, hi))
        elif kind == _CERT_SERIAL_BITMAP:
            _parse_bitmap(sub, serials)
        elif kind == _CERT_KEY_ID:
            while sub.remaining:
                key_ids.add(sub.text())
        elif kind == _CERT_EXTENSION:
            _parse_extension(sub.data, "KRL certificate extension")
            sub.pos = len(sub.data)
        else:
            raise RemoteProtocolError(f"unknown KRL certificate sub-section {kind:#x}")
        if sub.remaining:
            raise RemoteProtocolError("KRL certificate sub-section has trailing bytes")
    return RevokedCertificates(ca_key, frozenset(serials), tuple(ranges), frozenset(key_ids))


def _parse_blobs(data: bytes, size: int | None, what: str) -> set[bytes]:
    reader = WireReader(data, what)
    out: set[bytes] = set()
    while reader.remaining:
        blob = reader.string()
        if size is not None and len(blob) != size:
            raise RemoteProtocolError(f"{what}: entry of {len(blob)} bytes, expected {size}")
        if not blob:
            raise RemoteProtocolError(f"{what}: empty entry")
        out.add(blob)
    return out


def parse_krl(data: bytes) -> KRL:
    """Decode a binary KRL and verify any embedded signature.

    Args:
        data: the KRL file contents.

    Returns:
        The parsed KRL.

    Raises:
        RemoteProtocolError: not a KRL, malformed, unsupported, or a bad embedded signature.
    """
    if len(data) > MAX_KRL_SIZE:
        raise RemoteProtocolError(f"KRL larger than {MAX_KRL_SIZE} bytes")
    reader = WireReader(data, "KRL")
    if reader._take(len(KRL_MAGIC)) != KRL_MAGIC:
        raise RemoteProtocolError("not a binary KRL (bad magic)")
    if reader.uint32() != KRL_FORMAT_VERSION:
        raise RemoteProtocolError("unsupported KRL format version")
    version, generated = reader.uint64(), reader.uint64()
    reader.uint64()  # flags: none defined
    reader.string()  # reserved
    comment = reader.text()
    certs: list[RevokedCertificates] = []
    blobs: dict[int, set[bytes]] = {2: set(), 3: set(), 5: set()}
    signers: list[bytes] = []
    while reader.remaining:
        kind = reader.byte()
        if kind == _SECTION_SIGNATURE:
            signers.append(_check_embedded_signature(reader))
            continue
        if signers:
            raise RemoteProtocolError("KRL has a section after its signature")
        section = reader.string()
        if kind == _SECTION_CERTIFICATES:
            certs.append(_parse_cert_section(section))
        elif kind == _SECTION_EXPLICIT_KEY:
            blobs[2] |= _parse_blobs(section, None, "KRL explicit keys")
        elif kind == _SECTION_FINGERPRINT_SHA1:
            blobs[3] |= _parse_blobs(section, 20, "KRL SHA1 fingerprints")
        elif kind == _SECTION_FINGERPRINT_SHA256:
            blobs[5] |= _parse_blobs(section, 32, "KRL SHA256 fingerprints")
        elif kind == _SECTION_EXTENSION:
            _parse_extension(section, "KRL extension")
        else:
            raise RemoteProtocolError(f"unknown KRL section {kind}")
    return KRL(
        version=version,
        generated=generated,
        comment=comment,
        certificates=tuple(certs),
        explicit_keys=frozenset(blobs[2]),
        sha1_fingerprints=frozenset(blobs[3]),
        sha256_fingerprints=frozenset(blobs[5]),
        signature_keys=tuple(signers),
    )


def _check_embedded_signature(reader: WireReader) -> bytes:
    key_blob = reader.string()
    signed = reader.data[: reader.pos]
    signature = reader.string()
    key = parse_key_blob(key_blob)
    if not check_signature(key, signature, signed):
        raise RemoteProtocolError("KRL signature does not verify")
    return key_blob


# --- SSHSIG (detached signatures, ssh-keygen -Y) ----------------------------------------------


def _sshsig_signed_data(message: bytes, namespace: str) -> bytes:
    digest = hashlib.sha512(message).digest()
    return (
        _SSHSIG_MAGIC
        + wire_string(namespace)
        + wire_string(b"")
        + wire_string(_SSHSIG_HASH)
        + wire_string(digest)
    )


def sign_krl(krl: bytes, key: PrivateKey, namespace: str = KRL_SIGNATURE_NAMESPACE) -> str:
    """A detached SSHSIG signature of ``krl`` (``ssh-keygen -Y sign`` format, armored).

    Args:
        krl: the KRL bytes.
        key: the SSH user CA signing key.
        namespace: SSHSIG namespace.

    Returns:
        ``-----BEGIN SSH SIGNATURE-----`` text.
    """
    blob = (
        _SSHSIG_MAGIC
        + struct.pack(">I", 1)
        + wire_string(ssh_public_key_blob(key.public_key()))
        + wire_string(namespace)
        + wire_string(b"")
        + wire_string(_SSHSIG_HASH)
        + wire_string(sign_data(key, _sshsig_signed_data(krl, namespace)))
    )
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
    return f"{_ARMOR_BEGIN}\n{body}\n{_ARMOR_END}\n"


def verify_krl_signature(
    krl: bytes,
    signature: str,
    trusted_keys: Sequence[PublicKey],
    namespace: str = KRL_SIGNATURE_NAMESPACE,
) -> PublicKey:
    """Check a detached SSHSIG signature over ``krl`` by one of ``trusted_keys``.

    Returns:
        The trusted key that signed.

    Raises:
        AccessDenied: malformed, wrong namespace, unknown signer or a bad signature.
    """
    text = signature.strip()
    if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
        raise AccessDenied("KRL signature: not an SSH signature")
    try:
        blob = base64.b64decode("".join(text[len(_ARMOR_BEGIN) : -len(_ARMOR_END)].split()))
        reader = WireReader(blob, "SSH signature")
        if reader._take(6) != _SSHSIG_MAGIC or reader.uint32() != 1:
            raise RemoteProtocolError("not SSHSIG version 1")
        key_blob, sig_namespace = reader.string(), reader.text()
        reader.string()  # reserved
        hash_alg, sig = reader.text(), reader.string()
        if reader.remaining:
            raise RemoteProtocolError("trailing bytes")
    except (binascii.Error, ValueError, RemoteProtocolError) as exc:
        raise AccessDenied(f"KRL signature is malformed: {exc}") from None
    if sig_namespace != namespace or hash_alg != _SSHSIG_HASH:
        raise AccessDenied(f"KRL signature is for namespace {sig_namespace!r}, not {namespace!r}")
    for key in trusted_keys:
        if ssh_public_key_blob(key) == key_blob:
            if check_signature(key, sig, _sshsig_signed_data(krl, namespace)):
                return key
            raise AccessDenied("KRL signature does not verify: the KRL was altered")
    raise AccessDenied("KRL is signed by a key that is not a trusted user CA key")
