"""Read the TLS ClientHello before the handshake: server name (SNI), offered ALPN, versions.

Layer: ``protocols`` (pure). stdlib ``ssl`` chooses the server context before it shows us what
the client offered, and has no per-connection ALPN callback (STYLE.md, constraint 3). The proxy
therefore peeks at the ClientHello bytes itself, decides which ``SSLContext`` to use (mTLS for our
internal ALPNs, the public web certificate for ``http/1.1``/``h2``), and only then hands the
untouched bytes to ``loop.start_tls``. This module never decrypts, answers or consumes anything.

Wire format (RFC 8446 5.1 and 4.1.2; RFC 6066 3 for SNI; RFC 7301 3.1 for ALPN)::

    record    type u8 = 22 | legacy_version u16 = 0x03xx | length u16 (1..2^14) | fragment
    handshake msg_type u8 = 1 | length u24 | body        (may span several records)
    body      legacy_version u16 | random[32] | session_id<0..32> | cipher_suites<2..2^16-2>
              | compression_methods<1..2^8-1> | extensions<0..2^16-1>  (u16 type, u16 length)
    SNI (0)   server_name_list<u16> of (name_type u8, HostName<u16>); name_type 0 = host_name
    ALPN (16) protocol_name_list<u16> of ProtocolName<u8> (1..255 bytes)
    versions (43)  supported_versions<u8> of u16

Bounds: a ClientHello longer than :data:`MAX_CLIENT_HELLO` (64 KiB; post-quantum key shares make
real ones ~2 KiB) is refused as soon as its 4-byte handshake header is seen, so a client can make
the proxy buffer at most ~64 KiB plus record headers. Zero-length handshake records are refused
(RFC 8446 5.1 forbids them), so every byte a client sends moves the parse forward.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from bastion.errors import RemoteProtocolError

__all__ = ["MAX_CLIENT_HELLO", "ClientHello", "parse_client_hello"]

MAX_CLIENT_HELLO: Final = 64 * 1024
"""Largest ClientHello body (handshake message length) we accept."""

_RECORD: Final = struct.Struct("!BHH")
_MAX_RECORD: Final = 2**14
_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_EXT_SUPPORTED_VERSIONS: Final = 43
# DNS name characters, plus "_" which internal host names use in practice.
_HOSTNAME_CHARS: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
)


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a client offered in its ClientHello."""

    sni: str | None
    """The host_name from server_name, lower-cased ASCII; ``None`` when absent."""
    alpn: tuple[str, ...]
    """Offered ALPN protocol ids in client preference order, decoded as latin-1 (a lossless
    byte-to-str mapping: ids are opaque bytes); empty when the extension is absent."""
    legacy_version: int
    """The body's legacy_version (0x0303 for TLS 1.2 and 1.3 clients)."""
    supported_versions: tuple[int, ...]
    """The supported_versions extension (GREASE values included); empty when absent."""
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    """Extension types in the order sent (for logging and fingerprinting)."""

    @property
    def versions(self) -> tuple[int, ...]:
        """Versions the client can speak: supported_versions, else the legacy version."""
        return self.supported_versions or (self.legacy_version,)


def parse_client_hello(data: bytes | bytearray | memoryview) -> ClientHello | None:
    """Parse the ClientHello at the start of a TLS connection.

    Args:
        data: every byte received so far on the connection (from the first record header on);
            bytes after the ClientHello are ignored.

    Returns:
        The parsed ClientHello, or ``None`` when ``data`` is a valid but incomplete prefix: read
        more bytes and call again with all of them.

    Raises:
        RemoteProtocolError: the bytes cannot begin a ClientHello (wrong record type or version,
            empty or oversize record, another handshake message), the message is longer than
            :data:`MAX_CLIENT_HELLO`, or its body is malformed. Nothing else escapes.
    """
    body = _reassemble(bytes(data))
    if body is None:
        return None
    return _parse_body(body)


def _reassemble(data: bytes) -> bytes | None:
    """Join handshake record fragments until the whole ClientHello message is present."""
    fragments: list[bytes] = []
    got = 0
    need: int | None = None  # total message length (4-byte header + body), once known
    offset = 0
    while need is None or got < need:
        if len(data) - offset < _RECORD.size:
            _check_partial_record_header(data[offset:])
            return None
        content_type, version, length = _RECORD.unpack_from(data, offset)
        if content_type != _HANDSHAKE:
            raise RemoteProtocolError(
                f"expected a TLS handshake record (type 22), got content type {content_type}"
            )
        if version >> 8 != 3:
            raise RemoteProtocolError(f"TLS record version 0x{version:04x} is not 3.x")
        if length == 0 or length > _MAX_RECORD:
            raise RemoteProtocolError(f"TLS handshake record length {length} is not 1..16384")
        fragment = data[offset + _RECORD.size : offset + _RECORD.size + length]
        fragments.append(fragment)
        got += len(fragment)
        if need is None and got >= 4:
            header = b"".join(fragments)[:4]
            if header[0] != _CLIENT_HELLO:
                raise RemoteProtocolError(
                    f"first TLS handshake message must be ClientHello (1), got {header[0]}"
                )
            body_length = int.from_bytes(header[1:4], "big")
            if body_length > MAX_CLIENT_HELLO:
                raise RemoteProtocolError(
                    f"ClientHello of {body_length} bytes exceeds the {MAX_CLIENT_HELLO}-byte limit"
                )
            need = 4 + body_length
        if len(fragment) < length and (need is None or got < need):
            return None
        offset += _RECORD.size + length
    return b"".join(fragments)[4:need]


def _check_partial_record_header(head: bytes) -> None:
    if head[:1] not in (b"", bytes([_HANDSHAKE])):
        raise RemoteProtocolError(
            f"expected a TLS handshake record (type 22), got content type {head[0]}"
        )
    if len(head) >= 2 and head[1] != 3:
        raise RemoteProtocolError(f"TLS record major version {head[1]} is not 3")


class _Reader:
    """A bounds-checked cursor: every short read is a RemoteProtocolError naming the field."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise RemoteProtocolError(
                f"ClientHello {what} needs {n} bytes but only {self.remaining} remain"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def take_all(self) -> bytes:
        return self.take(self.remaining, "")

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str) -> _Reader:
        return _Reader(self.take(self.uint(length_size, f"{what} length"), what))


def _parse_body(body: bytes) -> ClientHello:
    reader = _Reader(body)
    legacy_version = reader.uint(2, "legacy_version")
    reader.take(32, "random")
    session_id = reader.vector(1, "session_id")
    if session_id.remaining > 32:
        raise RemoteProtocolError("ClientHello session_id is longer than 32 bytes")
    suites = reader.vector(2, "cipher_suites")
    if suites.remaining == 0 or suites.remaining % 2:
        raise RemoteProtocolError("ClientHello cipher_suites must be a non-empty list of u16")
    cipher_suites = tuple(suites.uint(2, "cipher suite") for _ in range(suites.remaining // 2))
    if reader.vector(1, "compression_methods").remaining == 0:
        raise RemoteProtocolError("ClientHello compression_methods is empty")
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    types: list[int] = []
    if reader.remaining:  # extensions are optional (pre-TLS 1.2 clients)
        extensions = reader.vector(2, "extensions")
        if reader.remaining:
            raise RemoteProtocolError("ClientHello has bytes after its extensions")
        while extensions.remaining:
            ext_type = extensions.uint(2, "extension type")
            ext = extensions.vector(2, f"extension {ext_type}")
            if ext_type in types:
                raise RemoteProtocolError(f"ClientHello repeats extension {ext_type}")
            types.append(ext_type)
            if ext_type == _EXT_SERVER_NAME:
                sni = _parse_sni(ext)
            elif ext_type == _EXT_ALPN:
                alpn = _parse_alpn(ext)
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                versions = _parse_versions(ext)
    return ClientHello(sni, alpn, legacy_version, versions, cipher_suites, tuple(types))


def _parse_sni(ext: _Reader) -> str | None:
    names = ext.vector(2, "server_name_list")
    _expect_consumed(ext, "server_name")
    host: str | None = None
    while names.remaining:
        name_type = names.uint(1, "server name type")
        name = names.vector(2, "server name").take_all()
        if name_type != 0:
            continue  # RFC 6066 leaves room for other name types; none is defined
        if host is not None:
            raise RemoteProtocolError("ClientHello server_name has two host_name entries")
        if not name or len(name) > 253 or not _HOSTNAME_CHARS.issuperset(name):
            raise RemoteProtocolError(f"ClientHello SNI {name[:64]!r} is not a DNS host name")
        host = name.decode("ascii").lower()
    return host


def _parse_alpn(ext: _Reader) -> tuple[str, ...]:
    names = ext.vector(2, "ALPN protocol_name_list")
    _expect_consumed(ext, "ALPN")
    protocols: list[str] = []
    while names.remaining:
        name = names.vector(1, "ALPN protocol name").take_all()
        if not name:
            raise RemoteProtocolError("ClientHello ALPN has an empty protocol name")
        protocols.append(name.decode("latin-1"))
    if not protocols:
        raise RemoteProtocolError("ClientHello ALPN extension lists no protocol")
    return tuple(protocols)


def _parse_versions(ext: _Reader) -> tuple[int, ...]:
    versions = ext.vector(1, "supported_versions")
    _expect_consumed(ext, "supported_versions")
    if versions.remaining == 0 or versions.remaining % 2:
        raise RemoteProtocolError("ClientHello supported_versions must be a non-empty u16 list")
    return tuple(versions.uint(2, "version") for _ in range(versions.remaining // 2))


def _expect_consumed(reader: _Reader, what: str) -> None:
    if reader.remaining:
        raise RemoteProtocolError(f"ClientHello {what} extension has trailing bytes")
