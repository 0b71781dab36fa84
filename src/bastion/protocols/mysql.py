"""The MySQL / MariaDB client-server protocol, sans-IO: framing, handshake, errors, commands.

Layer: ``protocols`` (pure). Bytes in, values out, bytes out; no sockets, no clock. Driven by
``bsh proxy db`` (the local server-side greeting), the proxy's database route
(``proxy/db_route.py``: the client's HandshakeResponse, per-command audit and checks) and the
database agent (``agent/db_service.py``: the handshake with the real server). Reference:
https://mariadb.com/kb/en/clientserver-protocol/ and MySQL's "Client/Server Protocol".

Framing::

    packet      len u24 LE | seq u8 | payload            len < 0xFFFFFF ends a logical packet;
                                                        a 0xFFFFFF packet continues in the next

The server speaks first (HandshakeV10); the client answers with an SSLRequest (then TLS) and a
HandshakeResponse41; the server answers OK, ERR or an AuthSwitchRequest. After that, every
command starts at sequence id 0 (``COM_QUERY``, ``COM_STMT_PREPARE``, ``COM_INIT_DB``, ...).

What this module refuses, always with :class:`~bastion.errors.RemoteProtocolError` (the only
exception that escapes a parser; the fuzz tests in ``tests/unit/protocols`` hold it to that):

* a logical packet over the reader's ``max_length`` (continuations included);
* a handshake or HandshakeResponse41 without the 4.1 protocol, truncated, or with non-UTF-8
  names; an empty command packet.

Per-statement audit comes from :class:`CommandTracker`: ``COM_QUERY`` and ``COM_STMT_EXECUTE``
(with the parameter values decoded from the binary protocol, the statement's SQL from its
``COM_STMT_PREPARE`` and the server's PREPARE_OK), MariaDB's ``COM_STMT_BULK_EXECUTE`` (one
statement per row, :class:`BulkExecute`), ``COM_INIT_DB`` / ``USE`` (for the caller to check
against ``db_names``), and refusals (``COM_CHANGE_USER``, replication commands).
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from bastion.errors import RemoteProtocolError
from bastion.protocols.pgcopy import CopyReport
from bastion.protocols.postgres import MAX_SHOWN_VALUE, Statement

__all__ = [
    "CLIENT_CONNECT_ATTRS",
    "CLIENT_CONNECT_WITH_DB",
    "CLIENT_PLUGIN_AUTH",
    "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA",
    "CLIENT_PROTOCOL_41",
    "CLIENT_SECURE_CONNECTION",
    "CLIENT_SSL",
    "DEFAULT_SERVER_VERSION",
    "ER_ACCESS_DENIED",
    "ER_CONNECTION_KILLED",
    "ER_DBACCESS_DENIED",
    "ER_NET_READ_ERROR",
    "LOCAL_CAPABILITIES",
    "MARIADB_CLIENT_CACHE_METADATA",
    "MARIADB_CLIENT_EXTENDED_METADATA",
    "MARIADB_CLIENT_PROGRESS",
    "MARIADB_CLIENT_STMT_BULK_OPERATIONS",
    "ANSWER_FORMATS",
    "answer_formats_missing",
    "is_progress_report",
    "mariadb_version",
    "MAX_MESSAGE_LENGTH",
    "MAX_PAYLOAD",
    "BulkExecute",
    "CommandTracker",
    "Forbidden",
    "Handshake",
    "HandshakeResponse",
    "MySQLStatement",
    "names_file",
    "MAX_HANDSHAKE_LENGTH",
    "Packet",
    "PacketReader",
    "PacketScanner",
    "SSLRequest",
    "UseDatabase",
    "build_handshake",
    "build_handshake_response",
    "build_packet",
    "build_ssl_request",
    "count_placeholders",
    "err_packet",
    "greeting",
    "is_eof",
    "is_mariadb",
    "parse_column_count",
    "parse_text_row",
    "negotiate",
    "ok_packet",
    "parse_err",
    "parse_handshake",
    "parse_handshake_response",
    "redact_sql",
    "with_seq",
]

MAX_PAYLOAD: Final = 0xFFFFFF
"""A physical packet's largest payload; a packet this long continues in the next one."""
MAX_MESSAGE_LENGTH: Final = 64 * 1024 * 1024
"""Default cap of one logical client packet read by the proxy (a query, a long-data chunk)."""
MAX_HANDSHAKE_LENGTH: Final = 16 * 1024
"""A HandshakeResponse41 (user, auth data, database, plugin, connect attributes) is small."""

CLIENT_LONG_PASSWORD: Final = 1
CLIENT_FOUND_ROWS: Final = 2
CLIENT_LONG_FLAG: Final = 4
CLIENT_CONNECT_WITH_DB: Final = 8
CLIENT_NO_SCHEMA: Final = 16
CLIENT_COMPRESS: Final = 32
CLIENT_ODBC: Final = 64
CLIENT_LOCAL_FILES: Final = 128
CLIENT_IGNORE_SPACE: Final = 256
CLIENT_PROTOCOL_41: Final = 512
CLIENT_INTERACTIVE: Final = 1024
CLIENT_SSL: Final = 2048
CLIENT_IGNORE_SIGPIPE: Final = 4096
CLIENT_TRANSACTIONS: Final = 8192
CLIENT_RESERVED: Final = 16384
CLIENT_SECURE_CONNECTION: Final = 32768
CLIENT_MULTI_STATEMENTS: Final = 1 << 16
CLIENT_MULTI_RESULTS: Final = 1 << 17
CLIENT_PS_MULTI_RESULTS: Final = 1 << 18
CLIENT_PLUGIN_AUTH: Final = 1 << 19
CLIENT_CONNECT_ATTRS: Final = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: Final = 1 << 21
CLIENT_SESSION_TRACK: Final = 1 << 23
CLIENT_DEPRECATE_EOF: Final = 1 << 24
MARIADB_CLIENT_STMT_BULK_OPERATIONS: Final = 1 << 34
"""MariaDB's extended capabilities are bits 32-63 of a capability value here (as in MariaDB's
own sources): a server that does not set ``CLIENT_LONG_PASSWORD`` (MySQL's ``CLIENT_MYSQL``)
sends them in its greeting's reserved bytes, and its clients answer in the last four filler
bytes of their HandshakeResponse41. This one allows ``COM_STMT_BULK_EXECUTE``."""
MARIADB_CLIENT_PROGRESS: Final = 1 << 32
"""During a long command (``ALTER TABLE``, ``LOAD DATA``...) the server sends progress reports:
ERR packets with code 0xFFFF (:func:`is_progress_report`), each taking a sequence id, before the
command's answer."""
MARIADB_CLIENT_EXTENDED_METADATA: Final = 1 << 35
"""Column definitions carry the type's name and format (``json``, ``uuid``...)."""
MARIADB_CLIENT_CACHE_METADATA: Final = 1 << 36
"""A result set's column count is followed by a "metadata follows" byte, and the server leaves
out the column definitions of a prepared statement's result when the client has them."""
_EXTENDED_UNDERSTOOD: Final = (
    MARIADB_CLIENT_PROGRESS
    | MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | MARIADB_CLIENT_EXTENDED_METADATA
    | MARIADB_CLIENT_CACHE_METADATA
)
"""The extended capabilities the proxy carries: progress reports and bulk execution (read by
:class:`CommandTracker`), and the two that change only result sets, which the proxy relays
without reading."""
_MARIADB_METADATA_SINCE: Final = (10, 6)
"""MariaDB offers cached metadata since 10.6 (and extended metadata since 10.5.2)."""
ANSWER_FORMATS: Final = (
    (CLIENT_DEPRECATE_EOF, "CLIENT_DEPRECATE_EOF"),
    (CLIENT_SESSION_TRACK, "CLIENT_SESSION_TRACK"),
    (MARIADB_CLIENT_PROGRESS, "MARIADB_CLIENT_PROGRESS"),
    (MARIADB_CLIENT_EXTENDED_METADATA, "MARIADB_CLIENT_EXTENDED_METADATA"),
    (MARIADB_CLIENT_CACHE_METADATA, "MARIADB_CLIENT_CACHE_METADATA"),
)
"""Capabilities that change the format of the server's answers: a client that negotiated one
with a local greeting parses every answer its way, so the database must offer it too
(:func:`answer_formats_missing`)."""

LOCAL_CAPABILITIES: Final = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_COMPRESS
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
)
"""What ``bsh proxy db``'s local greeting offers: no TLS (the loopback hop), compression (zlib:
the proxy inflates the client's frames and reads every command, :mod:`.mysql_compress`; it
spares the hop between ``bsh`` and the proxy, which carries the client's bytes as they are),
LOAD DATA LOCAL (for clients that enable it: the file's bytes are
counted, :class:`CommandTracker`), and ``CLIENT_LONG_PASSWORD`` set so MariaDB clients do not
use MariaDB's extended capability bits: a MariaDB-only command sent to a MySQL server fails.
In front of a database known to be MariaDB, :func:`greeting` offers its bulk
execution too. The agent then asks the real server for the intersection with what it offers
(:func:`negotiate`)."""

DEFAULT_SERVER_VERSION: Final = "5.5.5-10.11.0-bastion"
"""The version a greeting gives when the database's own is not known. The ``5.5.5-`` prefix is
how MariaDB servers introduce themselves to MySQL clients; MariaDB's clients read extended
capabilities only from a version that names MariaDB, and this one does not."""


def is_mariadb(server_version: str) -> bool:
    """Whether a server's greeting version names MariaDB (as MariaDB's clients decide)."""
    return "MariaDB" in server_version or "-maria-" in server_version


def mariadb_version(server_version: str) -> tuple[int, int] | None:
    """(major, minor) of a MariaDB greeting version (``5.5.5-10.11.6-MariaDB-...``), None for
    another server or a version that does not say."""
    if not is_mariadb(server_version):
        return None
    numbers = server_version.removeprefix("5.5.5-").split("-", 1)[0].split(".")
    if len(numbers) < 2 or not all(n.isdigit() for n in numbers[:2]):
        return None
    return int(numbers[0]), int(numbers[1])


def greeting(server_version: str) -> tuple[str, int]:
    """The version and capabilities a local greeting gives in front of a database whose server
    greeted with ``server_version`` (as its agent reported it; ``""``: not known yet): that
    version (else :data:`DEFAULT_SERVER_VERSION`) and :data:`LOCAL_CAPABILITIES`; for MariaDB
    also its bulk execution (its clients then also pipeline a prepare with its execute, which a
    MySQL server refuses: so only when the database is known to be MariaDB) and its progress
    reports, and from MariaDB 10.6 on, extended and cached metadata (the agent refuses a
    session whose database turns out not to offer them: :func:`answer_formats_missing`)."""
    if not is_mariadb(server_version):
        return server_version or DEFAULT_SERVER_VERSION, LOCAL_CAPABILITIES
    caps = LOCAL_CAPABILITIES & ~CLIENT_LONG_PASSWORD
    caps |= MARIADB_CLIENT_PROGRESS | MARIADB_CLIENT_STMT_BULK_OPERATIONS
    if (mariadb_version(server_version) or (0, 0)) >= _MARIADB_METADATA_SINCE:
        caps |= MARIADB_CLIENT_EXTENDED_METADATA | MARIADB_CLIENT_CACHE_METADATA
    return server_version, caps


def is_progress_report(payload: bytes) -> bool:
    """A MariaDB progress report (an ERR packet with code 0xFFFF): not a command's answer."""
    return payload[:3] == b"\xff\xff\xff"


def answer_formats_missing(client: int, server: int) -> list[str]:
    """The capabilities of :data:`ANSWER_FORMATS` the client negotiated and the database does
    not offer, by name: the database would answer in a format the client does not parse."""
    return [name for bit, name in ANSWER_FORMATS if client & bit and not server & bit]


ER_ACCESS_DENIED: Final = 1045
ER_DBACCESS_DENIED: Final = 1044
ER_CONNECTION_KILLED: Final = 1927
ER_NET_READ_ERROR: Final = 1158
"""With SQLSTATE 08S01: the session could not be opened (database or proxy unreachable, a
user that cannot be provisioned). A server error code: clients print the message of an ERR
packet with one; one from their own range (2013, "lost connection") makes the mariadb client
report "Received malformed packet" instead of the message."""
ER_UNKNOWN_COM: Final = 1047

COM_QUIT: Final = 0x01
COM_INIT_DB: Final = 0x02
COM_QUERY: Final = 0x03
COM_FIELD_LIST: Final = 0x04
COM_PROCESS_KILL: Final = 0x0C
COM_CHANGE_USER: Final = 0x11
COM_STMT_PREPARE: Final = 0x16
COM_STMT_EXECUTE: Final = 0x17
COM_STMT_SEND_LONG_DATA: Final = 0x18
COM_STMT_CLOSE: Final = 0x19
COM_STMT_RESET: Final = 0x1A
COM_STMT_BULK_EXECUTE: Final = 0xFA
_REPLICATION: Final = {
    0x12: "COM_BINLOG_DUMP",
    0x13: "COM_TABLE_DUMP",
    0x15: "COM_REGISTER_SLAVE",
    0x1E: "COM_BINLOG_DUMP_GTID",
}
_SEND_TYPES_TO_SERVER: Final = 128
"""COM_STMT_BULK_EXECUTE's flag: the parameters' types follow (else: those sent before)."""
_LAST_PREPARED: Final = 0xFFFFFFFF
"""MariaDB: ``stmt_id`` -1 in COM_STMT_EXECUTE means the statement prepared last (pipelined)."""

_HEAD = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


# ----------------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Packet:
    """One logical packet (continuations joined); ``seq`` is its first physical packet's."""

    seq: int
    payload: bytes


def build_packet(seq: int, payload: bytes) -> bytes:
    """Frame ``payload`` (split into 0xFFFFFF-byte packets, with an empty one when the last is
    exactly that long), sequence ids from ``seq``."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_PAYLOAD]
        out += (_HEAD.pack(len(chunk))[:3]) + bytes([seq & 0xFF]) + chunk
        seq += 1
        pos += len(chunk)
        if len(chunk) < MAX_PAYLOAD:
            return bytes(out)


def with_seq(packet: bytes, seq: int) -> bytes:
    """The same physical packet with sequence id ``seq``."""
    return packet[:3] + bytes([seq & 0xFF]) + packet[4:]


class PacketReader:
    """Cuts a byte stream into logical packets.

    Args:
        max_length: the longest logical packet accepted (continuations included).
    """

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._seq = -1
        self._size = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._size

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return the logical packets it completes.

        Raises:
            RemoteProtocolError: a packet longer than ``max_length``.
        """
        if not self._buffer and not self._parts and len(data) >= 4:
            # The usual read: one whole packet, not continued (no copy into the buffer).
            length = data[0] | data[1] << 8 | data[2] << 16
            if len(data) == 4 + length and length < MAX_PAYLOAD and length <= self.max_length:
                return [Packet(data[3], bytes(data[4:]))]
        self._buffer += data
        out: list[Packet] = []
        buf = self._buffer
        pos = 0
        while len(buf) - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if self._size + length > self.max_length:
                raise RemoteProtocolError(
                    f"packet of more than {self.max_length} bytes (limit {self.max_length})"
                )
            end = pos + 4 + length
            if end > len(buf):
                break
            if not self._parts and self._seq < 0:
                self._seq = buf[pos + 3]
            self._parts.append(bytes(buf[pos + 4 : end]))
            self._size += length
            pos = end
            if length < MAX_PAYLOAD:
                payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                out.append(Packet(self._seq, payload))
                self._parts, self._size, self._seq = [], 0, -1
        del buf[:pos]
        return out


class PacketScanner:
    """Follows packet boundaries of the server's stream without copying payloads; hands over
    the (small) packets that start while ``capture`` is asked for."""

    _CAPTURE_MAX = 4096

    def __init__(self) -> None:
        self._head = bytearray()
        self._left = 0
        self._current: bytearray | None = None
        self.last_seq = -1
        """Sequence id of the last packet header seen."""

    def feed(self, data: bytes, capture: bool = False) -> list[Packet]:
        """The packets of ``data`` that start while ``capture`` is true (up to 4 KiB each,
        continuations apart); follows every packet header (``last_seq``)."""
        out: list[Packet] = []
        pos, size = 0, len(data)
        if not capture and self._current is None and not self._head:
            # Only the boundaries (a result set's rows): the headers, in a tight loop.
            pos = self._left
            if pos >= size:
                self._left = pos - size
                return out
            seq = self.last_seq
            while size - pos >= 4:
                seq = data[pos + 3]
                pos += 4 + (data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
            self.last_seq = seq
            if pos >= size:
                self._left = pos - size
                return out
            self._left = 0  # a header cut short: the general loop keeps its start
        while pos < size:
            if self._left:
                take = min(self._left, size - pos)
                if self._current is not None:
                    self._current += data[pos : pos + take]
                self._left -= take
                pos += take
                if not self._left and self._current is not None:
                    out.append(Packet(self.last_seq, bytes(self._current)))
                    self._current = None
                continue
            head = self._head
            if not head and size - pos >= 4:  # a whole header here: no copy
                self._left = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
                self.last_seq = data[pos + 3]
                pos += 4
            else:
                need = 4 - len(head)
                head += data[pos : pos + need]
                pos += need
                if len(head) < 4:
                    break
                self._left = head[0] | head[1] << 8 | head[2] << 16
                self.last_seq = head[3]
                head.clear()
            if capture and self._left <= self._CAPTURE_MAX:
                self._current = bytearray()
                if not self._left:
                    out.append(Packet(self.last_seq, b""))
                    self._current = None
        return out


# ------------------------------------------------------------------------------- primitives


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{self.what}: {why}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def lenenc(self) -> int:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return int.from_bytes(self.take(2), "little")
        if first == 0xFD:
            return int.from_bytes(self.take(3), "little")
        if first == 0xFE:
            return int.from_bytes(self.take(8), "little")
        raise self.fail(f"bad length-encoded integer prefix 0x{first:02x}")

    def lenenc_bytes(self) -> bytes:
        return self.take(self.lenenc())

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.fail("string without its NUL terminator")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def text(self, raw: bytes, name: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{name} is not UTF-8") from None

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def lenenc_int(value: int) -> bytes:
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


# -------------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Handshake:
    """The server's greeting (HandshakeV10)."""

    server_version: str
    connection_id: int
    capabilities: int
    charset: int
    status: int
    scramble: bytes = field(repr=False)
    plugin: str


def build_handshake(
    *,
    connection_id: int,
    scramble: bytes,
    server_version: str = DEFAULT_SERVER_VERSION,
    capabilities: int = LOCAL_CAPABILITIES,
    charset: int = 45,
    status: int = 2,
    plugin: str = "mysql_native_password",
) -> bytes:
    """A HandshakeV10 payload (``scramble``: 20 bytes of anything for the local hop).

    See :data:`DEFAULT_SERVER_VERSION` and :func:`greeting`.
    """
    if len(scramble) < 8:
        raise ValueError("scramble of at least 8 bytes")
    return (
        b"\x0a"
        + server_version.encode()
        + b"\0"
        + _U32.pack(connection_id & 0xFFFFFFFF)
        + scramble[:8]
        + b"\0"
        + _U16.pack(capabilities & 0xFFFF)
        + bytes([charset & 0xFF])
        + _U16.pack(status & 0xFFFF)
        + _U16.pack(capabilities >> 16 & 0xFFFF)
        + bytes([len(scramble) + 1])
        + bytes(6)
        + _U32.pack(0 if capabilities & CLIENT_LONG_PASSWORD else capabilities >> 32)
        + scramble[8:]
        + b"\0"
        + plugin.encode()
        + b"\0"
    )


def parse_handshake(payload: bytes) -> Handshake:
    """Parse a server's greeting.

    Raises:
        RemoteProtocolError: not a 4.1 HandshakeV10 (an ERR packet is reported with its text).
    """
    if payload[:1] == b"\xff":
        code, _, message = parse_err(payload)
        raise RemoteProtocolError(f"the server refused the connection: {code} {message}")
    cur = _Cursor(payload, "server greeting")
    if cur.u8() != 10:
        raise cur.fail("not protocol version 10")
    version = cur.text(cur.cstring(), "server version")
    conn_id = cur.u32()
    scramble = cur.take(8)
    cur.take(1)
    caps = cur.u16()
    charset = status = 0
    plugin = ""
    if cur.left:
        charset = cur.u8()
        status = cur.u16()
        caps |= cur.u16() << 16
        auth_len = cur.u8()
        reserved = cur.take(10)
        if not caps & CLIENT_LONG_PASSWORD:  # a MariaDB server: its extended capabilities
            caps |= int(_U32.unpack(reserved[6:])[0]) << 32
        if caps & CLIENT_SECURE_CONNECTION:
            more = max(13, auth_len - 8)
            scramble += cur.take(min(more, cur.left)).rstrip(b"\0")
        if caps & CLIENT_PLUGIN_AUTH and cur.left:
            rest = cur.rest()
            plugin = cur.text(rest.split(b"\0", 1)[0], "auth plugin")
    if not caps & CLIENT_PROTOCOL_41:
        raise cur.fail("the server does not speak the 4.1 protocol")
    return Handshake(version, conn_id, caps, charset, status, scramble, plugin)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The client asks for TLS before its HandshakeResponse41."""

    capabilities: int
    max_packet: int
    charset: int


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """The client's HandshakeResponse41."""

    capabilities: int
    max_packet: int
    charset: int
    user: str
    auth_response: bytes = field(repr=False)
    database: str = ""
    plugin: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


def _head(capabilities: int, max_packet: int, charset: int) -> bytes:
    """The 32 bytes an SSLRequest and a HandshakeResponse41 start with (MariaDB's extended
    capabilities in the last four)."""
    return (
        _U32.pack(capabilities & 0xFFFFFFFF)
        + _U32.pack(max_packet)
        + bytes([charset])
        + bytes(19)
        + _U32.pack(capabilities >> 32)
    )


def build_ssl_request(capabilities: int, max_packet: int, charset: int) -> bytes:
    return _head(capabilities | CLIENT_SSL, max_packet, charset)


def build_handshake_response(resp: HandshakeResponse) -> bytes:
    """The payload of ``resp`` (auth data encoded as its capabilities say)."""
    caps = resp.capabilities
    out = bytearray(_head(caps, resp.max_packet, resp.charset))
    out += resp.user.encode() + b"\0"
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        out += lenenc_int(len(resp.auth_response)) + resp.auth_response
    elif caps & CLIENT_SECURE_CONNECTION:
        out += bytes([len(resp.auth_response[:255])]) + resp.auth_response[:255]
    else:
        out += resp.auth_response + b"\0"
    if caps & CLIENT_CONNECT_WITH_DB:
        out += resp.database.encode() + b"\0"
    if caps & CLIENT_PLUGIN_AUTH:
        out += resp.plugin.encode() + b"\0"
    if caps & CLIENT_CONNECT_ATTRS:
        attrs = b"".join(
            lenenc_int(len(k.encode())) + k.encode() + lenenc_int(len(v.encode())) + v.encode()
            for k, v in resp.attrs.items()
        )
        out += lenenc_int(len(attrs)) + attrs
    return bytes(out)


def parse_handshake_response(payload: bytes) -> SSLRequest | HandshakeResponse:
    """Parse the client's answer to the greeting.

    Raises:
        RemoteProtocolError: truncated, not 4.1, oversized, or names that are not UTF-8.
    """
    if len(payload) > MAX_HANDSHAKE_LENGTH:
        raise RemoteProtocolError("handshake response too long")
    cur = _Cursor(payload, "handshake response")
    caps = cur.u32()
    if not caps & CLIENT_PROTOCOL_41:
        raise cur.fail("the client does not speak the 4.1 protocol")
    max_packet = cur.u32()
    charset = cur.u8()
    caps |= int(_U32.unpack(cur.take(23)[19:])[0]) << 32  # MariaDB's extended capabilities
    if not cur.left:
        if caps & CLIENT_SSL:
            return SSLRequest(caps, max_packet, charset)
        raise cur.fail("truncated")
    user = cur.text(cur.cstring(), "user name")
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = cur.lenenc_bytes()
    elif caps & CLIENT_SECURE_CONNECTION:
        auth = cur.take(cur.u8())
    else:
        auth = cur.cstring()
    database = ""
    if caps & CLIENT_CONNECT_WITH_DB and cur.left:
        database = cur.text(cur.cstring(), "database name")
    plugin = ""
    if caps & CLIENT_PLUGIN_AUTH and cur.left:
        plugin = cur.text(cur.cstring(), "auth plugin")
    attrs: dict[str, str] = {}
    if caps & CLIENT_CONNECT_ATTRS and cur.left:
        inner = _Cursor(cur.lenenc_bytes(), "connect attributes")
        while inner.left:
            key = inner.text(inner.lenenc_bytes(), "attribute name")
            attrs[key] = inner.text(inner.lenenc_bytes(), "attribute value")
    return HandshakeResponse(caps, max_packet, charset, user, auth, database, plugin, attrs)


def negotiate(client: int, server: int) -> int:
    """The capabilities the agent asks the real server for: what the (local) client negotiated
    and the server offers, never compression (a client's ends at the proxy:
    :mod:`.mysql_compress`), of MariaDB's extended ones only those the proxy reads; always 4.1
    and TLS."""
    wanted = client & ~(CLIENT_COMPRESS | CLIENT_SSL | CLIENT_NO_SCHEMA)
    wanted &= 0xFFFFFFFF | _EXTENDED_UNDERSTOOD
    return (wanted & server) | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION


# ---------------------------------------------------------------------------- OK / ERR


def ok_packet(seq: int, *, status: int = 2, affected: int = 0, last_id: int = 0) -> bytes:
    return build_packet(
        seq, b"\x00" + lenenc_int(affected) + lenenc_int(last_id) + _U16.pack(status) + bytes(2)
    )


def err_packet(seq: int, code: int, sqlstate: str, message: str) -> bytes:
    """An ERR packet (4.1 format: ``#`` and the five-character SQLSTATE)."""
    state = (sqlstate + "HY000")[:5].encode()
    text = message.replace("\n", " ").encode()[:4000]
    return build_packet(seq, b"\xff" + _U16.pack(code) + b"#" + state + text)


def parse_err(payload: bytes) -> tuple[int, str, str]:
    """``(code, sqlstate, message)`` of an ERR payload (lenient: for messages only)."""
    if len(payload) < 3 or payload[0] != 0xFF:
        return 0, "", ""
    code = int(_U16.unpack(payload[1:3])[0])
    rest = payload[3:]
    state = ""
    if rest[:1] == b"#" and len(rest) >= 6:
        state, rest = rest[1:6].decode("ascii", "replace"), rest[6:]
    return code, state, rest.decode("utf-8", "replace")


# ---------------------------------------------------------------------- text result sets


def is_eof(payload: bytes) -> bool:
    """An EOF packet (``0xfe``, shorter than 9 bytes: a row can start with ``0xfe`` too)."""
    return payload[:1] == b"\xfe" and len(payload) < 9


def parse_column_count(payload: bytes) -> int:
    """The column count that opens a text result set (COM_QUERY's answer that is neither OK
    nor ERR).

    Raises:
        RemoteProtocolError: not a length-encoded integer, or trailing bytes.
    """
    cur = _Cursor(payload, "result set header")
    count = cur.lenenc()
    if cur.left or not 0 < count < 4096:
        raise cur.fail(f"not a column count ({count} columns, {cur.left} bytes more)")
    return count


def parse_text_row(payload: bytes, columns: int) -> list[str | None]:
    """One row of a text result set: ``columns`` length-encoded strings (``0xfb``: NULL).

    Raises:
        RemoteProtocolError: truncated, trailing bytes, or a value that is not UTF-8.
    """
    cur = _Cursor(payload, "result row")
    row: list[str | None] = []
    for _ in range(columns):
        if cur.data[cur.pos : cur.pos + 1] == b"\xfb":
            cur.pos += 1
            row.append(None)
        else:
            row.append(cur.text(cur.lenenc_bytes(), "value"))
    if cur.left:
        raise cur.fail(f"{cur.left} bytes after the last column")
    return row


# ------------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class MySQLStatement(Statement):
    """A statement for ``db.session.query``; ``param_types`` names each parameter's type code
    (``LONGLONG``, ``VAR_STRING``...), for prepared statements."""

    param_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UseDatabase:
    """The client switches its default database (``COM_INIT_DB`` or ``USE name``): check the
    name against ``db_names`` before forwarding."""

    name: str
    statement: MySQLStatement


@dataclass(frozen=True, slots=True)
class Forbidden:
    """A command that never goes through (``COM_CHANGE_USER``, replication)."""

    reason: str


_PASSWORD_PATTERNS = (
    re.compile(
        r"(\bIDENTIFIED\s+(?:BY\s+(?:PASSWORD\s+)?|(?:VIA|WITH)\s+\w+\s+(?:USING|AS|BY)\s+))"
        r"('(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|\S+)",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(
        r"(\b(?:OLD_)?PASSWORD\s*\(\s*)('(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\")",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(
        r"(\bSET\s+PASSWORD\b[^=]*=\s*)('(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\")",
        re.IGNORECASE | re.DOTALL,
    ),
)


def redact_sql(sql: str) -> str:
    """Hide password literals: ``IDENTIFIED BY '...'``, ``IDENTIFIED VIA x USING '...'``,
    ``PASSWORD('...')``, ``SET PASSWORD ... = '...'``."""
    if sql.isascii():
        lowered = sql.lower()
        if "password" not in lowered and "identified" not in lowered:
            return sql  # the usual statement: three regex substitutions (~10 us) less
    for pattern in _PASSWORD_PATTERNS:
        sql = pattern.sub(r"\1'***'", sql)
    return sql


_SKIP = re.compile(
    r"'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|`[^`]*`?|--[ \t][^\n]*|#[^\n]*|/\*.*?(?:\*/|$)",
    re.DOTALL,
)


def count_placeholders(sql: str) -> int:
    """The ``?`` placeholders of ``sql`` outside strings, identifiers and comments."""
    return _SKIP.sub("", sql).count("?")


_USE = re.compile(r"^\s*USE\s+(`(?:[^`]|``)+`|[\w$]+)\s*;?\s*$", re.IGNORECASE)


def _may_be_use(sql: str) -> bool:
    """Whether :data:`_USE` may match ``sql``: False for the usual query, whose first character
    is ASCII, not white space, nor ``u`` (only ``u``/``U`` match it there, case-insensitively:
    non-ASCII characters that fold to ASCII letters go through the regex)."""
    first = sql[:1]
    return not first.isascii() or first in "uU" or first.isspace() or not first


_TYPES: Final = {
    0: "DECIMAL", 1: "TINY", 2: "SHORT", 3: "LONG", 4: "FLOAT", 5: "DOUBLE", 6: "NULL",
    7: "TIMESTAMP", 8: "LONGLONG", 9: "INT24", 10: "DATE", 11: "TIME", 12: "DATETIME",
    13: "YEAR", 15: "VARCHAR", 16: "BIT", 245: "JSON", 246: "NEWDECIMAL", 247: "ENUM",
    248: "SET", 249: "TINY_BLOB", 250: "MEDIUM_BLOB", 251: "LONG_BLOB", 252: "BLOB",
    253: "VAR_STRING", 254: "STRING", 255: "GEOMETRY",
}  # fmt: skip
_INTS: Final = {1: (1, "b"), 2: (2, "h"), 13: (2, "h"), 3: (4, "i"), 9: (4, "i"), 8: (8, "q")}


@dataclass(slots=True)
class _Prepared:
    sql: str
    params: int
    types: tuple[tuple[int, int], ...] = ()
    long_data: set[int] = field(default_factory=set)


_INDICATORS: Final = {1: None, 2: "DEFAULT", 3: "IGNORE"}
"""A bulk row's value indicators (0: a value follows; the rest: its stand-in in the audit)."""


@dataclass(slots=True)
class BulkExecute:
    """A ``COM_STMT_BULK_EXECUTE`` (MariaDB): its rows, each one execution of the prepared
    statement, decoded on demand (:meth:`take`), so a packet of a million rows never becomes
    a million statements in memory at once. A malformed row ends it with an
    ``(undecodable)`` statement."""

    sql: str
    types: tuple[tuple[int, int], ...]
    body: bytes = field(repr=False)
    pos: int
    redact: bool
    done: bool = False

    def take(self, n: int) -> list[MySQLStatement]:
        """Up to ``n`` more rows' statements (``protocol`` ``bulk``)."""
        out: list[MySQLStatement] = []
        cur = _Cursor(self.body, "COM_STMT_BULK_EXECUTE")
        cur.pos = self.pos
        names = _type_names(self.types)
        while len(out) < n and not self.done:
            if not cur.left:
                self.done = True
                break
            try:
                row: list[str | None] = []
                for code, flags in self.types:
                    indicator = cur.u8()
                    if indicator in _INDICATORS:
                        row.append(_INDICATORS[indicator])
                    elif indicator:
                        raise cur.fail(f"bad indicator {indicator}")
                    else:
                        value = _value(cur, code, flags & 0x80)
                        row.append("?" if self.redact else value)
            except RemoteProtocolError:
                out.append(MySQLStatement(self.sql, ("(undecodable)",), "bulk"))
                self.done = True
                break
            out.append(MySQLStatement(self.sql, tuple(row), "bulk", names))
            self.pos = cur.pos
        return out

    def rows_left(self) -> int:
        """How many statements :meth:`take` has still to give (decodes them; keeps its place)."""
        pos, done = self.pos, self.done
        left = 0
        while not self.done:
            left += len(self.take(4096))
        self.pos, self.done = pos, done
        return left


@dataclass(slots=True)
class _Infile:
    """A LOAD DATA LOCAL under way: the file the server asked for and the bytes sent so far."""

    file: str
    sent: int = 0
    """The file's bytes the client sent."""
    sending: bool = True
    """Until the client's empty packet (end of file); then the server's answer ends it."""

    def report(self, answer: bytes) -> CopyReport:
        """The transfer's report from the server's answer (OK: its affected rows)."""
        rows: int | None = None
        if answer[:1] == b"\x00":
            with contextlib.suppress(RemoteProtocolError):  # a truncated OK: rows unknown
                rows = _Cursor(answer[1:], "OK packet").lenenc()
        outcome = "success" if rows is not None else "failure"
        return CopyReport("in", self.sent, rows, outcome, file=self.file)


class CommandTracker:
    """Follows prepared statements; turns client commands into audit statements and checks.

    Feed it every logical packet the client sends after the handshake (:meth:`client`) and
    the logical packets the server sends while :attr:`wants_server` (:meth:`server`: the
    statement ids of PREPARE_OK, LOAD DATA LOCAL).

    LOAD DATA LOCAL: a ``COM_QUERY`` whose text names ``local`` arms a look at its first answer;
    when the server asks for a file (``0xFB`` + name), the client's packets until its empty
    one are the file (counted, never commands) and the server's answer (OK with the rows, or
    ERR) ends the transfer: :meth:`server` returns its :class:`CopyReport`. A server asking for
    a file the statement does not name gets a :class:`Forbidden` (a rogue or compromised
    database reading the client's files), and a client packet outside any command (a file
    sent to a request nobody checked) is a protocol error: the caller ends the session.

    Args:
        redact_params: keep parameter values out of the audit (``"?"`` instead).
        max_entries: prepared statements tracked (oldest forgotten first).
    """

    def __init__(self, *, redact_params: bool = False, max_entries: int = 1024) -> None:
        self.redact_params = redact_params
        self.max_entries = max_entries
        self._pending: list[str] = []
        """The SQL of each COM_STMT_PREPARE awaiting its PREPARE_OK, in order."""
        self._answers: list[str | None] = []
        """Commands whose first answer is looked at, in order: a query naming LOCAL (its
        text), None for a COM_STMT_PREPARE."""
        self._infile: _Infile | None = None
        self._stmts: OrderedDict[int, _Prepared] = OrderedDict()  # the oldest goes in O(1)
        self._last: int | None = None
        self._lead = 0
        """Sequence id of the last progress report at the start of the answer being read (0:
        none): the answer's first real packet comes after it."""

    def client(
        self, packet: Packet
    ) -> MySQLStatement | BulkExecute | UseDatabase | Forbidden | None:
        """What the command in ``packet`` does for audit and checks (a
        ``COM_STMT_BULK_EXECUTE``: its rows, :class:`BulkExecute`).

        Raises:
            RemoteProtocolError: an empty or malformed command.
        """
        payload = packet.payload
        if packet.seq != 0:  # not a command: a LOAD DATA LOCAL file's data, or its end
            infile = self._infile
            if infile is None or not infile.sending:
                raise RemoteProtocolError(
                    "a packet outside any command (a file the database asked for unchecked?)"
                )
            if payload:
                infile.sent += len(payload)
            else:
                infile.sending = False
            return None
        if not payload:
            raise RemoteProtocolError("empty command packet")
        command, body = payload[0], payload[1:]
        if command == COM_QUERY:
            sql = _decode(body, "query")
            if "local" in sql.lower():  # a LOAD DATA LOCAL maybe: look at the first answer
                self._answers.append(sql)
            use = _USE.match(sql) if _may_be_use(sql) else None
            statement = MySQLStatement(redact_sql(sql))
            if use is not None:
                return UseDatabase(_unquote(use.group(1)), statement)
            return statement
        if command == COM_INIT_DB:
            name = _decode(body, "database name")
            return UseDatabase(name, MySQLStatement(f"USE `{name}`", protocol="init_db"))
        if command == COM_STMT_PREPARE:
            self._pending.append(redact_sql(_decode(body, "statement")))
            self._answers.append(None)
            return None
        if command in (COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE):
            return self._execute(body, bulk=command == COM_STMT_BULK_EXECUTE)
        if command == COM_STMT_SEND_LONG_DATA:
            cur = _Cursor(body, "COM_STMT_SEND_LONG_DATA")
            stmt = self._stmts.get(self._resolve(cur.u32()))
            if stmt is not None:
                stmt.long_data.add(cur.u16())
            return None
        if command == COM_STMT_CLOSE:
            cur = _Cursor(body, "COM_STMT_CLOSE")
            self._stmts.pop(cur.u32(), None)
            return None
        if command == COM_CHANGE_USER:
            return Forbidden("COM_CHANGE_USER is not allowed through the proxy: reconnect")
        if command in _REPLICATION:
            return Forbidden(f"{_REPLICATION[command]} (replication) is not allowed")
        if command == COM_FIELD_LIST:
            table = body.split(b"\0", 1)[0].decode("utf-8", "replace")
            return MySQLStatement(f"SHOW COLUMNS FROM `{table}`", protocol="field_list")
        if command == COM_PROCESS_KILL and len(body) >= 4:
            return MySQLStatement(f"KILL {_U32.unpack(body[:4])[0]}", protocol="kill")
        return None

    @property
    def receiving_file(self) -> bool:
        """The client's next packets are a LOAD DATA LOCAL file's (until its empty one), not
        commands."""
        return self._infile is not None and self._infile.sending

    @property
    def wants_server(self) -> bool:
        """A command waits for an answer this tracker reads (capture the server's packets)."""
        return bool(self._answers) or self._infile is not None

    def server(self, packet: Packet) -> CopyReport | Forbidden | None:
        """A packet from the server: the first response packet after a COM_STMT_PREPARE gives
        its statement id (PREPARE_OK) or an ERR; after a query naming LOCAL, a request for a
        file starts a LOAD DATA LOCAL, whose report the server's next answer completes (a
        request for a file the query does not name is :class:`Forbidden`). MariaDB's progress
        reports are passed over: the answer they precede is read as if they were not there."""
        payload = packet.payload
        if is_progress_report(payload):  # MariaDB: not an answer, more packets follow
            if packet.seq == self._lead + 1:  # at the start of an answer
                self._lead = packet.seq
            return None
        first = packet.seq == self._lead + 1  # an answer's first packet after its progress
        self._lead = 0
        if self._infile is not None:  # its answer (or an ERR that cut the transfer short)
            report = self._infile.report(payload)
            self._infile = None
            return report
        if not self._answers or not first:
            return None
        query = self._answers.pop(0)
        if query is not None:
            if payload[:1] == b"\xfb":
                file = _decode(payload[1:], "file name")
                if not names_file(query, file):
                    return Forbidden(
                        f"the database asked for the file {file!r}, which the statement does"
                        " not name"
                    )
                self._infile = _Infile(file)
            return None
        if payload[:1] == b"\x00" and len(payload) >= 12:
            stmt_id = int(_U32.unpack(payload[1:5])[0])
            params = int(_U16.unpack(payload[7:9])[0])
            sql = self._pending.pop(0)
            self._stmts.pop(stmt_id, None)
            self._stmts[stmt_id] = _Prepared(sql, params)
            self._last = stmt_id
            while len(self._stmts) > self.max_entries:
                self._stmts.popitem(last=False)
        elif payload[:1] == b"\xff":
            self._pending.pop(0)
        return None

    def _resolve(self, stmt_id: int) -> int:
        if stmt_id == _LAST_PREPARED and self._last is not None:
            return self._last
        return stmt_id

    def _execute(self, body: bytes, *, bulk: bool) -> MySQLStatement | BulkExecute:
        cur = _Cursor(body, "COM_STMT_EXECUTE")
        raw_id = cur.u32()
        stmt_id = self._resolve(raw_id)
        stmt = self._stmts.get(stmt_id)
        if raw_id == _LAST_PREPARED and self._pending:
            # Pipelined prepare + execute: the server has not answered the prepare yet (the
            # statement answered last is an older one).
            sql = self._pending[-1]
            stmt = _Prepared(sql, count_placeholders(sql))
        if stmt is None:
            return MySQLStatement(f"(unknown prepared statement {stmt_id})", (), "prepared")
        if bulk:
            return self._bulk(cur, stmt)
        try:
            params, types = self._params(cur, stmt)
        except RemoteProtocolError:
            params, types = ("(undecodable)",), ()
        finally:
            stmt.long_data.clear()
        return MySQLStatement(stmt.sql, params, "prepared", types)

    def _bulk(self, cur: _Cursor, stmt: _Prepared) -> MySQLStatement | BulkExecute:
        try:
            flags = cur.u16()
            if flags & _SEND_TYPES_TO_SERVER:
                stmt.types = tuple((cur.u8(), cur.u8()) for _ in range(stmt.params))
            if len(stmt.types) != stmt.params or not stmt.params:
                raise cur.fail("parameter types never sent")
        except RemoteProtocolError:
            return MySQLStatement(stmt.sql, ("(undecodable)",), "bulk")
        return BulkExecute(stmt.sql, stmt.types, cur.data, cur.pos, self.redact_params)

    def _params(
        self, cur: _Cursor, stmt: _Prepared
    ) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
        n = stmt.params
        cur.take(1 + 4)  # flags, iteration count
        if n == 0:
            return (), ()
        nulls = cur.take((n + 7) // 8)
        if cur.u8():
            stmt.types = tuple((cur.u8(), cur.u8()) for _ in range(n))
        if len(stmt.types) != n:
            raise cur.fail("parameter types never sent")
        values: list[str | None] = []
        for i, (code, flags) in enumerate(stmt.types):
            if nulls[i // 8] & (1 << (i % 8)) or code == 6:
                values.append(None)
            elif i in stmt.long_data:
                values.append("(long data)")
            elif self.redact_params:
                _value(cur, code, flags & 0x80)
                values.append("?")
            else:
                values.append(_value(cur, code, flags & 0x80))
        return tuple(values), _type_names(stmt.types)


def _type_names(types: tuple[tuple[int, int], ...]) -> tuple[str, ...]:
    return tuple(
        _TYPES.get(code, f"TYPE_{code}") + (" UNSIGNED" if flags & 0x80 else "")
        for code, flags in types
    )


def _value(cur: _Cursor, code: int, unsigned: int) -> str:
    if code in _INTS:
        size, fmt = _INTS[code]
        return str(struct.unpack("<" + (fmt.upper() if unsigned else fmt), cur.take(size))[0])
    if code == 4:
        return repr(struct.unpack("<f", cur.take(4))[0])
    if code == 5:
        return repr(struct.unpack("<d", cur.take(8))[0])
    if code in (7, 10, 12):
        return _datetime(_Cursor(cur.take(cur.u8()), "date"))
    if code == 11:
        return _time(_Cursor(cur.take(cur.u8()), "time"))
    raw = cur.lenenc_bytes()
    cut = raw[:MAX_SHOWN_VALUE]
    more = f"...({len(raw)} bytes)" if len(raw) > MAX_SHOWN_VALUE else ""
    try:
        return cut.decode() + more
    except UnicodeDecodeError:
        return "\\x" + cut.hex() + more


def _datetime(cur: _Cursor) -> str:
    if not cur.left:
        return "0000-00-00"
    year, month, day = cur.u16(), cur.u8(), cur.u8()
    try:
        text = date(year, month, day).isoformat()
    except ValueError:
        text = f"{year:04d}-{month:02d}-{day:02d}"
    if cur.left:
        text += f" {cur.u8():02d}:{cur.u8():02d}:{cur.u8():02d}"
    if cur.left:
        text += f".{cur.u32():06d}"
    return text


def _time(cur: _Cursor) -> str:
    if not cur.left:
        return "00:00:00"
    negative, days = cur.u8(), cur.u32()
    hours, minutes, seconds = cur.u8(), cur.u8(), cur.u8()
    text = f"{'-' if negative else ''}{days * 24 + hours:02d}:{minutes:02d}:{seconds:02d}"
    if cur.left:
        text += f".{cur.u32():06d}"
    return text


def names_file(sql: str, file: str) -> bool:
    """Whether ``sql`` names ``file`` as a string literal (as written, or with MySQL's escapes
    of backslashes and quotes): what a LOAD DATA LOCAL the client sent may ask for."""
    if not file:
        return False
    slashed = file.replace("\\", "\\\\")
    forms = {file, slashed}
    for quote in ("'", '"'):
        forms |= {slashed.replace(quote, "\\" + quote), file.replace(quote, quote + quote)}
    return any(f"{quote}{form}{quote}" in sql for form in forms for quote in ("'", '"'))


def _decode(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")  # the connection charset may be another: keep it visible


def _unquote(name: str) -> str:
    if name.startswith("`") and name.endswith("`"):
        return name[1:-1].replace("``", "`")
    return name
