"""Protocol detection on the proxy's shared port, and the PROXY protocol header (v1 and v2).

Layer: ``protocols`` (pure). This module sees only the first bytes a client sent; it knows nothing
about sockets, timeouts, certificates or routes. ``proxy/listener.py`` peeks at most
:data:`MAX_PEEK` bytes (under a handshake deadline), calls :func:`detect`, and acts:

* ``PROXY_V1`` / ``PROXY_V2`` -- only from a configured trusted load balancer: call
  :func:`parse_proxy_header`, strip ``header.length`` bytes, then detect again. The listener must
  refuse a second PROXY header (a header is only trusted once, from the load balancer itself).
* ``TLS`` -- continue with :func:`bastion.protocols.clienthello.parse_client_hello`.
* ``POSTGRES_SSL_REQUEST`` -- answer ``b"S"`` and upgrade in-band; ``POSTGRES_GSSENC_REQUEST`` --
  answer ``b"N"``; ``POSTGRES_CANCEL_REQUEST`` -- handle apart and never log its secret key;
  ``POSTGRES_STARTUP`` -- a plaintext Postgres client: refuse (we require TLS).
* ``HTTP`` -- redirect to HTTPS. ``SSH`` -- a bare SSH client. ``UNKNOWN`` -- close.

What each protocol's first bytes look like (all big-endian)::

    TLS record      16 03 0x                        content type handshake, version 3.0-3.4 (x<=4)
    SSH             "SSH-"                          RFC 4253 4.2 identification string
    HTTP/1.x        METHOD SP                       GET POST HEAD PUT DELETE OPTIONS PATCH CONNECT
    PG SSLRequest   00 00 00 08 04 d2 16 2f         length 8, code 80877103
    PG GSSENC       00 00 00 08 04 d2 16 30         length 8, code 80877104
    PG Cancel       00 00 00 10 04 d2 16 2e ...     length 16, code 80877102, pid, secret
    PG Startup      [len u32 8..10000] 00 03 xx xx  protocol 3.x, then key/value pairs
    PROXY v1        "PROXY " ... CRLF               at most 107 bytes in all
    PROXY v2        0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a  ver/cmd fam len[u16] addresses TLVs

Why a fixed peek: every signature above is decided within its first 12 bytes (the PROXY v2
signature is the longest), so a client can never make the proxy buffer more than
:data:`MAX_PEEK` bytes before a decision, and a slowloris client is only ever waiting on the
listener's deadline. :func:`detect` answers ``NeedMore`` only while the bytes seen so far are still
a prefix of some known signature; it never answers a kind that a longer input could contradict.

PROXY protocol reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

from bastion.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_PEEK",
    "PROXY_V1_MAX_LENGTH",
    "PROXY_V2_MAX_LENGTH",
    "PROXY_V2_SIGNATURE",
    "Detected",
    "Kind",
    "NeedMore",
    "ProxyAddress",
    "ProxyCommand",
    "ProxyHeader",
    "build_proxy_header_v1",
    "build_proxy_header_v2",
    "detect",
    "parse_proxy_header",
]

MAX_PEEK: Final = 12
""":func:`detect` always decides with at most this many bytes (the PROXY v2 signature length)."""

PROXY_V1_MAX_LENGTH: Final = 107
"""Longest legal PROXY v1 line, CRLF included (the spec's worst case, TCP6 with long ports)."""

PROXY_V2_MAX_LENGTH: Final = 16 + 2048
"""Longest PROXY v2 header we accept: 16 fixed bytes + addresses + TLVs. The wire format allows
65,551 bytes; load balancers send a few hundred at most (AWS/GCP/Azure TLVs included)."""

PROXY_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

_PG_MAX_STARTUP_LENGTH: Final = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH
_PG_SSL_REQUEST: Final = (80877103).to_bytes(4, "big")
_PG_GSSENC_REQUEST: Final = (80877104).to_bytes(4, "big")
_PG_CANCEL_REQUEST: Final = (80877102).to_bytes(4, "big")
_PG_PROTOCOL_3: Final = b"\x00\x03"  # major version 3, any minor (3.0, 3.2, ...)
_U32: Final = struct.Struct("!I")
_V2_FIXED: Final = struct.Struct("!12sBBH")
_V2_INET: Final = struct.Struct("!4s4sHH")
_V2_INET6: Final = struct.Struct("!16s16sHH")


class Kind(enum.Enum):
    """What the first bytes of a connection are."""

    TLS = "tls"
    SSH = "ssh"
    HTTP = "http"
    POSTGRES_SSL_REQUEST = "postgres_ssl_request"
    POSTGRES_GSSENC_REQUEST = "postgres_gssenc_request"
    POSTGRES_CANCEL_REQUEST = "postgres_cancel_request"
    POSTGRES_STARTUP = "postgres_startup"
    PROXY_V1 = "proxy_v1"
    PROXY_V2 = "proxy_v2"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Detected:
    """A decision: the connection speaks ``kind``."""

    kind: Kind
    reason: str
    """Human-readable why, for the debug log (never contains client secrets)."""


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Not enough bytes to decide yet: call again once at least ``at_least`` bytes are buffered."""

    at_least: int


class ProxyCommand(enum.Enum):
    LOCAL = "local"
    """The connection is the load balancer's own (health check) or its addresses are unknown:
    use the real socket endpoints. PROXY v1 ``UNKNOWN`` maps here too."""
    PROXY = "proxy"
    """The connection is relayed on behalf of ``source``."""


class ProxyAddress(NamedTuple):
    host: str
    """Normalised IP address text (``ipaddress`` form: compressed IPv6, no zone)."""
    port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY protocol header."""

    version: int
    """1 or 2."""
    command: ProxyCommand
    source: ProxyAddress | None
    """The original client; ``None`` when the header carries no usable address (LOCAL, v1
    UNKNOWN, v2 AF_UNSPEC / AF_UNIX)."""
    destination: ProxyAddress | None
    length: int
    """Bytes to strip from the front of the stream before detecting the real protocol."""


_SIGNATURES: Final[tuple[tuple[bytes, Kind], ...]] = (
    (b"SSH-", Kind.SSH),
    (b"PROXY ", Kind.PROXY_V1),
    (PROXY_V2_SIGNATURE, Kind.PROXY_V2),
    *(
        (method + b" ", Kind.HTTP)
        for method in (
            b"GET",
            b"POST",
            b"HEAD",
            b"PUT",
            b"DELETE",
            b"OPTIONS",
            b"PATCH",
            b"CONNECT",
        )
    ),
)


def detect(data: bytes | bytearray | memoryview) -> Detected | NeedMore:
    """Classify the first bytes a client sent on the shared port.

    Args:
        data: the bytes received so far (only the first :data:`MAX_PEEK` are looked at).

    Returns:
        ``Detected`` once the bytes match a signature, or match none (``Kind.UNKNOWN``: the caller
        closes the connection). ``NeedMore(at_least)`` while the bytes are a strict prefix of some
        signature; ``at_least`` never exceeds :data:`MAX_PEEK`, so a caller that already holds
        ``MAX_PEEK`` bytes always gets a ``Detected``.

    Raises:
        Nothing: unknown input is a ``Detected(Kind.UNKNOWN)``, not an error.
    """
    head = bytes(data[:MAX_PEEK])
    n = len(head)
    if n == 0:
        return NeedMore(1)
    need = MAX_PEEK + 1
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return Detected(kind, f"starts with {signature[:8]!r}")
        if len(signature) > n and signature.startswith(head):
            need = min(need, len(signature))
    tls = _detect_tls(head)
    pg = _detect_postgres(head)
    for result in (tls, pg):
        if isinstance(result, Detected):
            return result
        if isinstance(result, NeedMore):
            need = min(need, result.at_least)
    if need <= MAX_PEEK:
        return NeedMore(need)
    return Detected(Kind.UNKNOWN, f"no known protocol starts with {head!r}")


def _detect_tls(head: bytes) -> Detected | NeedMore | None:
    # Record header: content type 22 (handshake), then legacy_record_version 3.0..3.4.
    if head[0] != 0x16:
        return None
    if len(head) < 2:
        return NeedMore(3)
    if head[1] != 0x03:
        return None
    if len(head) < 3:
        return NeedMore(3)
    if head[2] > 0x04:
        return None
    return Detected(Kind.TLS, f"TLS handshake record, version 3.{head[2]}")


def _detect_postgres(head: bytes) -> Detected | NeedMore | None:
    # Every message we accept is shorter than 64 KiB, so the u32 length starts with 00 00.
    n = len(head)
    if head[: min(n, 2)] != b"\x00\x00"[: min(n, 2)]:
        return None
    if n < 4:
        return NeedMore(4)
    (length,) = _U32.unpack_from(head)
    candidates: list[tuple[bytes, Kind]] = []
    if length == 8:
        candidates += [
            (_PG_SSL_REQUEST, Kind.POSTGRES_SSL_REQUEST),
            (_PG_GSSENC_REQUEST, Kind.POSTGRES_GSSENC_REQUEST),
        ]
    if length == 16:
        candidates.append((_PG_CANCEL_REQUEST, Kind.POSTGRES_CANCEL_REQUEST))
    if 8 <= length <= _PG_MAX_STARTUP_LENGTH:
        candidates.append((_PG_PROTOCOL_3, Kind.POSTGRES_STARTUP))
    code = head[4:8]
    need = MAX_PEEK + 1
    for expected, kind in candidates:
        if code.startswith(expected):
            return Detected(kind, f"PostgreSQL {kind.value}, length {length}")
        if expected.startswith(code):
            need = min(need, 4 + len(expected))
    return NeedMore(need) if need <= MAX_PEEK else None


def parse_proxy_header(data: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """Parse a PROXY protocol v1 or v2 header at the start of ``data``.

    Only call this for connections from a configured trusted load balancer: anyone else could
    claim any source address.

    Args:
        data: the bytes received so far; bytes after the header are ignored.

    Returns:
        The header (``length`` says how many bytes to strip), or ``NeedMore(at_least)`` while
        ``data`` is a strict prefix of a header that may still be valid. ``at_least`` is bounded by
        :data:`PROXY_V1_MAX_LENGTH` / :data:`PROXY_V2_MAX_LENGTH`.

    Raises:
        RemoteProtocolError: not a PROXY header, a v1 line longer than 107 bytes, a malformed
            field (address, port, protocol), a v2 version/command/family that is not supported,
            or a v2 length above :data:`PROXY_V2_MAX_LENGTH`.
    """
    head = bytes(data[:PROXY_V2_MAX_LENGTH])
    n = len(head)
    for signature, parse in ((b"PROXY ", _parse_v1), (PROXY_V2_SIGNATURE, _parse_v2)):
        if head.startswith(signature):
            return parse(head)
        if n < len(signature) and signature.startswith(head):
            return NeedMore(len(signature))
    raise RemoteProtocolError(f"not a PROXY protocol header: starts with {head[:12]!r}")


# Printable ASCII plus CR and LF: anything else cannot appear in a v1 line, so fail early.
_V1_ALLOWED: Final = bytes(range(0x20, 0x7F)) + b"\r\n"


def _parse_v1(head: bytes) -> ProxyHeader | NeedMore:
    end = head.find(b"\r\n", 0, PROXY_V1_MAX_LENGTH)
    scanned = head[: PROXY_V1_MAX_LENGTH if end < 0 else end]
    # Before the CRLF, a CR may only appear as the very last byte received (half a CRLF).
    carriage_returns = scanned if end >= 0 else scanned[:-1]
    if scanned.translate(None, _V1_ALLOWED) or b"\n" in scanned or b"\r" in carriage_returns:
        raise RemoteProtocolError(
            "PROXY v1 header contains a byte that is not printable ASCII before its CRLF"
        )
    if end < 0:
        if len(head) >= PROXY_V1_MAX_LENGTH:
            raise RemoteProtocolError(
                f"PROXY v1 header has no CRLF within {PROXY_V1_MAX_LENGTH} bytes"
            )
        return NeedMore(len(head) + 1)
    fields = head[:end].split(b" ")
    length = end + 2
    if fields[1] == b"UNKNOWN":
        # The spec: the receiver must ignore everything after UNKNOWN up to the CRLF.
        return ProxyHeader(1, ProxyCommand.LOCAL, None, None, length)
    if fields[1] not in (b"TCP4", b"TCP6"):
        raise RemoteProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, got {fields[1]!r}"
        )
    if len(fields) != 6:
        raise RemoteProtocolError(
            f"PROXY v1 {fields[1].decode()} line needs exactly 5 space-separated fields "
            f"after PROXY, got {len(fields) - 1}"
        )
    version = 4 if fields[1] == b"TCP4" else 6
    source = ProxyAddress(_v1_ip(fields[2], version), _v1_port(fields[4]))
    destination = ProxyAddress(_v1_ip(fields[3], version), _v1_port(fields[5]))
    return ProxyHeader(1, ProxyCommand.PROXY, source, destination, length)


def _v1_ip(raw: bytes, version: int) -> str:
    text = raw.decode("ascii")
    try:
        if "%" in text:
            raise ValueError("zone ids are not allowed")
        address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise RemoteProtocolError(
            f"PROXY v1 TCP{version} address {text!r} is not a valid IPv{version} address"
        ) from exc
    return str(address)


def _v1_port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (raw.startswith(b"0") and raw != b"0"):
        raise RemoteProtocolError(
            f"PROXY v1 port {raw!r} must be a decimal 0..65535 without leading zeros"
        )
    port = int(raw)
    if port > 65535:
        raise RemoteProtocolError(f"PROXY v1 port {port} is above 65535")
    return port


def _parse_v2(head: bytes) -> ProxyHeader | NeedMore:
    if len(head) < _V2_FIXED.size:
        return NeedMore(_V2_FIXED.size)
    _, ver_cmd, family, payload_length = _V2_FIXED.unpack_from(head)
    if ver_cmd >> 4 != 2:
        raise RemoteProtocolError(f"PROXY v2 header version must be 2, got {ver_cmd >> 4}")
    if ver_cmd & 0x0F not in (0, 1):
        raise RemoteProtocolError(f"PROXY v2 command must be LOCAL or PROXY, got {ver_cmd & 15}")
    length = _V2_FIXED.size + payload_length
    if length > PROXY_V2_MAX_LENGTH:
        raise RemoteProtocolError(
            f"PROXY v2 header of {length} bytes exceeds the {PROXY_V2_MAX_LENGTH}-byte limit"
        )
    if len(head) < length:
        return NeedMore(length)
    if ver_cmd & 0x0F == 0:
        # LOCAL: the receiver must ignore the address block and use the real endpoints.
        return ProxyHeader(2, ProxyCommand.LOCAL, None, None, length)
    address_family, transport = family >> 4, family & 0x0F
    if address_family > 3 or transport > 2:
        raise RemoteProtocolError(f"PROXY v2 address family byte 0x{family:02x} is not defined")
    if address_family in (0, 3):  # AF_UNSPEC, AF_UNIX: nothing we can use
        return ProxyHeader(2, ProxyCommand.PROXY, None, None, length)
    if transport != 1:
        raise RemoteProtocolError(
            f"PROXY v2 transport must be STREAM for a TCP proxy, got 0x{family:02x}"
        )
    layout = _V2_INET if address_family == 1 else _V2_INET6
    if payload_length < layout.size:
        raise RemoteProtocolError(
            f"PROXY v2 payload of {payload_length} bytes is shorter than its "
            f"{layout.size}-byte address block"
        )
    src, dst, sport, dport = layout.unpack_from(head, _V2_FIXED.size)
    # TLVs (the rest up to ``length``) are skipped: we use none of them yet.
    return ProxyHeader(
        2,
        ProxyCommand.PROXY,
        ProxyAddress(str(ipaddress.ip_address(src)), sport),
        ProxyAddress(str(ipaddress.ip_address(dst)), dport),
        length,
    )


def _ip_pair(
    source: ProxyAddress | tuple[str, int], destination: ProxyAddress | tuple[str, int]
) -> tuple[
    ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address
]:
    try:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    except ValueError as exc:
        raise LocalProtocolError(f"PROXY header needs IP addresses: {exc}") from exc
    if src.version != dst.version:
        raise LocalProtocolError("PROXY header source and destination must be the same family")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 65535:
            raise LocalProtocolError(f"PROXY header port {port} is out of range")
    return src, dst


def build_proxy_header_v1(
    source: ProxyAddress | tuple[str, int] | None,
    destination: ProxyAddress | tuple[str, int] | None,
) -> bytes:
    """Build a PROXY v1 line (``PROXY UNKNOWN`` when ``source`` is ``None``).

    Args:
        source: original client (IP text, port), or ``None``.
        destination: the address the client connected to; ``None`` only with ``source=None``.

    Returns:
        The header bytes, CRLF included.

    Raises:
        LocalProtocolError: invalid address/port, or mixed IPv4/IPv6.
    """
    if source is None or destination is None:
        if source is not destination:
            raise LocalProtocolError("PROXY v1 needs both addresses or neither")
        return b"PROXY UNKNOWN\r\n"
    src, dst = _ip_pair(source, destination)
    line = f"PROXY TCP{src.version} {src} {dst} {source[1]} {destination[1]}\r\n"
    return line.encode("ascii")


def build_proxy_header_v2(
    source: ProxyAddress | tuple[str, int] | None,
    destination: ProxyAddress | tuple[str, int] | None,
    *,
    command: ProxyCommand = ProxyCommand.PROXY,
    tlvs: bytes = b"",
) -> bytes:
    """Build a PROXY v2 header.

    Args:
        source: original client; ``None`` (with ``destination=None``) gives AF_UNSPEC.
        destination: the address the client connected to.
        command: ``LOCAL`` for health checks (addresses are then sent only if given).
        tlvs: already-encoded TLVs appended after the address block.

    Returns:
        The header bytes.

    Raises:
        LocalProtocolError: invalid address/port, mixed families, or a header longer than
            :data:`PROXY_V2_MAX_LENGTH`.
    """
    ver_cmd = 0x20 | (1 if command is ProxyCommand.PROXY else 0)
    if source is None or destination is None:
        if source is not destination:
            raise LocalProtocolError("PROXY v2 needs both addresses or neither")
        family, block = 0x00, b""
    else:
        src, dst = _ip_pair(source, destination)
        layout, family = (_V2_INET, 0x11) if src.version == 4 else (_V2_INET6, 0x21)
        block = layout.pack(src.packed, dst.packed, source[1], destination[1])
    payload = block + tlvs
    if _V2_FIXED.size + len(payload) > PROXY_V2_MAX_LENGTH:
        raise LocalProtocolError(f"PROXY v2 header exceeds {PROXY_V2_MAX_LENGTH} bytes")
    return _V2_FIXED.pack(PROXY_V2_SIGNATURE, ver_cmd, family, len(payload)) + payload
