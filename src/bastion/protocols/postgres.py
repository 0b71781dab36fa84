"""The PostgreSQL wire protocol (v3), sans-IO: framing, startup packets, errors, queries.

Layer: ``protocols`` (pure). Bytes in, values out, bytes out; no sockets, no clock. The proxy's
database route (``proxy/db_route.py``) and the database agent (``agent/db_service.py``) drive
it. Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html

Two framings share one connection::

    untyped (first packet only)   len u32 | code u32 | payload      SSLRequest, GSSENCRequest,
                                                                     CancelRequest, StartupMessage
    typed (everything after)      type u8 | len u32 | body           len counts itself, not type

What this module refuses, always with :class:`~bastion.errors.RemoteProtocolError` (the only
exception that escapes a parser; the fuzz tests in ``tests/unit/protocols`` hold it to that):

* a startup packet longer than :data:`MAX_STARTUP_LENGTH` (PostgreSQL's own limit) or shorter
  than 8 bytes, an unknown request code, a protocol version other than 3.x;
* startup parameters that are not NUL-terminated UTF-8 pairs, duplicated, or empty names;
* a typed message whose length is under 4 or over the reader's ``max_length``;
* a Parse/Bind/Execute/Query body that does not follow its layout.

Per-statement audit comes from :class:`StatementTracker`: it follows named and unnamed prepared
statements and portals across Parse/Bind/Execute and emits one :class:`Statement` per
simple-protocol query and per Execute (with the bound parameter values).
:class:`StatementScanner` is what the proxy runs on the client's stream: the framing of
:class:`MessageReader` and the tracker in one pass that copies only the messages the tracker reads.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, TypeVar

from bastion.errors import RemoteProtocolError

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "MAX_MESSAGE_LENGTH",
    "MAX_STARTUP_LENGTH",
    "PROTOCOL_3",
    "SSL_REQUEST",
    "SSL_REQUEST_CODE",
    "Bind",
    "BackendKeyScanner",
    "CancelRequest",
    "Execute",
    "FunctionCall",
    "LARGE_OBJECT_FUNCTIONS",
    "GSSENCRequest",
    "LengthFramed",
    "Message",
    "MessageReader",
    "Parse",
    "Query",
    "SSLRequest",
    "StartupMessage",
    "Statement",
    "StatementScanner",
    "StatementTracker",
    "build_cancel_request",
    "build_message",
    "build_startup",
    "decode_frontend",
    "error_response",
    "function_call_text",
    "parse_error_response",
    "parse_startup_packet",
    "redact_sql",
]

SSL_REQUEST_CODE: Final = 80877103
GSSENC_REQUEST_CODE: Final = 80877104
CANCEL_REQUEST_CODE: Final = 80877102
PROTOCOL_3: Final = 3 << 16
"""Protocol 3.0; minor versions (3.2 of PostgreSQL 18) are accepted too."""
SSL_REQUEST: Final = struct.pack("!II", 8, SSL_REQUEST_CODE)
MAX_STARTUP_LENGTH: Final = 10_000
"""PostgreSQL's MAX_STARTUP_PACKET_LENGTH."""
MAX_MESSAGE_LENGTH: Final = 64 * 1024 * 1024
"""Default cap of one typed message read by the proxy (a query or a COPY chunk); the server
itself stops at 1 GiB, a proxy should not buffer that much for one statement."""
MAX_PARAMETERS: Final = 64
"""Startup parameters accepted (psql sends about 6)."""
MAX_SHOWN_VALUE: Final = 1024
"""Bytes of each bound parameter value kept for audit (the rest is counted, not kept)."""

_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HEAD = struct.Struct("!cI")
_V = TypeVar("_V")


# ----------------------------------------------------------------------------- startup packets


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The client asks for TLS; answer ``b"S"`` (then TLS) or ``b"N"``."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """The client asks for GSSAPI encryption; we always answer ``b"N"``."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Cancel the query of backend ``pid``; ``secret`` must never be logged."""

    pid: int
    secret: int = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """The session's parameters (``user``, ``database``, ``application_name``, ...)."""

    version: int
    params: dict[str, str]

    @property
    def user(self) -> str:
        return self.params.get("user", "")

    @property
    def database(self) -> str:
        """The database; PostgreSQL defaults it to the user name."""
        return self.params.get("database") or self.user


StartupPacket = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage


def parse_startup_packet(data: bytes) -> tuple[StartupPacket, int] | None:
    """Parse the untyped first packet of a connection (or the one after an ``N``/TLS).

    Args:
        data: the bytes read so far (may hold more than one packet).

    Returns:
        ``(packet, consumed)``, or ``None`` when ``data`` is still a prefix of a packet.

    Raises:
        RemoteProtocolError: a length out of bounds, an unknown code, a malformed startup.
    """
    if len(data) < 4:
        return None
    (length,) = _U32.unpack_from(data)
    if length < 8 or length > MAX_STARTUP_LENGTH:
        raise RemoteProtocolError(f"invalid startup packet length {length}")
    if len(data) < length:
        return None
    (code,) = _U32.unpack_from(data, 4)
    packet: StartupPacket
    if code == SSL_REQUEST_CODE:
        packet = SSLRequest()
        _expect_length(length, 8, "SSLRequest")
    elif code == GSSENC_REQUEST_CODE:
        packet = GSSENCRequest()
        _expect_length(length, 8, "GSSENCRequest")
    elif code == CANCEL_REQUEST_CODE:
        _expect_length(length, 16, "CancelRequest")
        pid, secret = struct.unpack_from("!iI", data, 8)
        packet = CancelRequest(pid, secret)
    elif code >> 16 == 3:
        packet = StartupMessage(code, _startup_params(bytes(data[8:length])))
    else:
        raise RemoteProtocolError(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: only protocol 3 is served"
        )
    return packet, length


def _expect_length(length: int, want: int, what: str) -> None:
    if length != want:
        raise RemoteProtocolError(f"{what} of length {length} (expected {want})")


def _startup_params(body: bytes) -> dict[str, str]:
    # name NUL value NUL ... NUL: the list ends with an empty name.
    params: dict[str, str] = {}
    pos = 0
    while True:
        end = body.find(b"\x00", pos)
        if end < 0:
            raise RemoteProtocolError("startup parameters are not NUL-terminated")
        if end == pos:  # the terminator
            if end + 1 != len(body):
                raise RemoteProtocolError("trailing bytes after the startup parameters")
            return params
        name = _text(body[pos:end], "parameter name")
        vend = body.find(b"\x00", end + 1)
        if vend < 0:
            raise RemoteProtocolError("startup parameters are not name/value pairs")
        value = _text(body[end + 1 : vend], "parameter value")
        if name in params:
            raise RemoteProtocolError(f"startup parameter {name[:40]!r} given twice")
        if len(params) >= MAX_PARAMETERS:
            raise RemoteProtocolError(f"more than {MAX_PARAMETERS} startup parameters")
        params[name] = value
        pos = vend + 1


def build_startup(params: dict[str, str], version: int = PROTOCOL_3) -> bytes:
    """A StartupMessage with ``params`` (names and values without NUL bytes).

    Raises:
        ValueError: a NUL in a name or value, or the packet would be too long.
    """
    body = b""
    for name, value in params.items():
        if not name or "\x00" in name or "\x00" in value:
            raise ValueError("startup parameter names and values may not contain NUL")
        body += name.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    packet = _U32.pack(len(body) + 8) + _U32.pack(version) + body
    if len(packet) > MAX_STARTUP_LENGTH:
        raise ValueError("startup packet too long")
    return packet


def build_cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!IIiI", 16, CANCEL_REQUEST_CODE, pid, secret)


# ----------------------------------------------------------------------------- typed messages


@dataclass(frozen=True, slots=True)
class Message:
    """One typed message: ``type`` is one ASCII byte, ``body`` excludes type and length."""

    type: bytes
    body: bytes


def build_message(type_: bytes, body: bytes = b"") -> bytes:
    return type_ + _U32.pack(len(body) + 4) + body


class MessageReader:
    """Incremental framing of typed messages (either direction).

    Args:
        max_length: the largest message body accepted; bigger is a protocol error (the caller
            ends the session with an ErrorResponse, never buffers it).
    """

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_length = max_length
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return every message now complete, in order.

        Raises:
            RemoteProtocolError: a length under 4 or over ``max_length``, or a non-ASCII type.
        """
        self._buf += data
        out: list[Message] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 5:
            type_, length = _HEAD.unpack_from(buf, pos)
            if length < 4:
                raise RemoteProtocolError(f"message length {length} is under 4")
            if length - 4 > self.max_length:
                raise RemoteProtocolError(
                    f"message of {length - 4} bytes exceeds the limit of {self.max_length}"
                )
            if type_[0] < 0x20 or type_[0] > 0x7E:
                raise RemoteProtocolError(f"invalid message type byte 0x{type_[0]:02x}")
            end = pos + 1 + length
            if len(buf) < end:
                break
            out.append(Message(type_, bytes(buf[pos + 5 : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def error_response(
    message: str,
    code: str = "28000",
    severity: str = "FATAL",
    detail: str = "",
    hint: str = "",
) -> bytes:
    """An ErrorResponse (``E``) message: ``psql`` prints ``FATAL:  <message>`` on one line.

    Args:
        message: the primary message (NUL bytes are dropped).
        code: SQLSTATE (28000 invalid_authorization_specification; 57P01 admin_shutdown;
            08P01 protocol_violation).
        severity: ERROR, FATAL or PANIC.
        detail: optional DETAIL line.
        hint: optional HINT line.
    """
    if not re.fullmatch(r"[0-9A-Z]{5}", code):
        raise ValueError(f"invalid SQLSTATE {code!r}")
    fields = [(b"S", severity), (b"V", severity), (b"C", code), (b"M", message)]
    if detail:
        fields.append((b"D", detail))
    if hint:
        fields.append((b"H", hint))
    body = b"".join(k + v.replace("\x00", "").encode() + b"\x00" for k, v in fields) + b"\x00"
    return build_message(b"E", body)


def parse_error_response(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse/NoticeResponse body (``{"C": "28000", "M": ...}``).

    Raises:
        RemoteProtocolError: fields not NUL-terminated or not UTF-8.
    """
    if not body.endswith(b"\x00"):
        raise RemoteProtocolError("error fields are not NUL-terminated")
    out: dict[str, str] = {}
    for part in body[:-1].split(b"\x00"):
        if not part:
            break
        out[chr(part[0])] = _text(part[1:], "error field")
    return out


# ----------------------------------------------------------------------------- frontend messages


@dataclass(frozen=True, slots=True)
class Query:
    """Simple protocol: one string, possibly several statements."""

    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    statement: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    values: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True)
class Close:
    kind: str
    """``S`` (statement) or ``P`` (portal)."""
    name: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    oid: int
    args: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class Other:
    """Any other frontend message (Sync, Flush, Describe, CopyData, Terminate, ...)."""

    type: bytes


FrontendMessage = Query | Parse | Bind | Execute | Close | FunctionCall | Other


class _Cursor:
    def __init__(self, body: bytes, what: str) -> None:
        self.body = body
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.body):
            raise RemoteProtocolError(f"truncated {self.what} message")

    def cstring(self) -> str:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise RemoteProtocolError(f"unterminated string in {self.what} message")
        raw = self.body[self.pos : end]
        self.pos = end + 1
        return _text(raw, f"{self.what} string")

    def int16(self) -> int:
        self._need(2)
        (value,) = _I16.unpack_from(self.body, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        self._need(4)
        (value,) = _I32.unpack_from(self.body, self.pos)
        self.pos += 4
        return int(value)

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise RemoteProtocolError(f"negative count in {self.what} message")
        return n

    def values(self) -> tuple[bytes | None, ...]:
        out: list[bytes | None] = []
        for _ in range(self.count()):
            size = self.int32()
            if size == -1:
                out.append(None)
                continue
            if size < 0:
                raise RemoteProtocolError(f"negative value length in {self.what} message")
            self._need(size)
            out.append(self.body[self.pos : self.pos + size])
            self.pos += size
        return tuple(out)

    def end(self) -> None:
        if self.pos != len(self.body):
            raise RemoteProtocolError(f"trailing bytes in {self.what} message")


def decode_frontend(msg: Message) -> FrontendMessage:
    """Decode the frontend messages that carry statements; others become :class:`Other`.

    Raises:
        RemoteProtocolError: the body does not follow the message's layout.
    """
    t = msg.type
    if t == b"Q":
        cur = _Cursor(msg.body, "Query")
        sql = cur.cstring()
        cur.end()
        return Query(sql)
    if t == b"P":
        cur = _Cursor(msg.body, "Parse")
        name, sql = cur.cstring(), cur.cstring()
        types = tuple(cur.int32() for _ in range(cur.count()))
        cur.end()
        return Parse(name, sql, types)
    if t == b"B":
        cur = _Cursor(msg.body, "Bind")
        portal, statement = cur.cstring(), cur.cstring()
        formats = tuple(cur.int16() for _ in range(cur.count()))
        values = cur.values()
        for _ in range(cur.count()):  # result formats
            cur.int16()
        cur.end()
        return Bind(portal, statement, formats, values)
    if t == b"E":
        cur = _Cursor(msg.body, "Execute")
        portal, rows = cur.cstring(), cur.int32()
        cur.end()
        return Execute(portal, rows)
    if t == b"C":
        cur = _Cursor(msg.body, "Close")
        cur._need(1)
        kind = chr(msg.body[0])
        cur.pos = 1
        name = cur.cstring()
        cur.end()
        if kind not in "SP":
            raise RemoteProtocolError(f"Close of unknown kind {kind!r}")
        return Close(kind, name)
    if t == b"F":
        cur = _Cursor(msg.body, "FunctionCall")
        oid = cur.int32()
        for _ in range(cur.count()):
            cur.int16()
        args = cur.values()
        cur.int16()
        cur.end()
        return FunctionCall(oid, args)
    return Other(t)


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement the client ran, for ``db.session.query``."""

    sql: str
    params: tuple[str | None, ...] = ()
    protocol: str = "simple"
    """``simple`` (Query), ``extended`` (Execute of a bound portal) or ``function``."""


_PASSWORD = re.compile(r"(\bPASSWORD\s+)('(?:[^']|'')*'|\S+)", re.IGNORECASE)


def redact_sql(sql: str) -> str:
    """Hide the literal after ``PASSWORD`` (``ALTER USER x PASSWORD '...'``)."""
    if sql.isascii() and "password" not in sql.lower():
        return sql  # the usual statement: a 4 us regex substitution less (non-ASCII text
        # goes through the regex: its case-insensitive match knows more than lower())
    return _PASSWORD.sub(r"\1'***'", sql)


def _show(value: bytes | None, fmt: int) -> str | None:
    if value is None:
        return None
    cut = value[:MAX_SHOWN_VALUE]
    more = f"...({len(value)} bytes)" if len(value) > MAX_SHOWN_VALUE else ""
    if fmt == 0:
        try:
            return cut.decode() + more
        except UnicodeDecodeError:
            pass
    return "\\x" + cut.hex() + more


class StatementTracker:
    """Follows prepared statements and portals; turns frontend messages into statements.

    Args:
        redact_params: keep parameter values out of the audit (``"?"`` instead).
        max_entries: prepared statements / portals tracked (oldest forgotten first).
    """

    def __init__(self, *, redact_params: bool = False, max_entries: int = 1024) -> None:
        self.redact_params = redact_params
        self.max_entries = max_entries
        # Ordered: the oldest is evicted in O(1) (a dict's first key after many deletions
        # at its front is found by a scan: quadratic for a client that names many statements).
        self._statements: OrderedDict[str, str] = OrderedDict()
        self._portals: OrderedDict[str, tuple[str, tuple[str | None, ...]]] = OrderedDict()

    def feed(self, message: Message) -> Statement | None:
        """The statement ``message`` runs, if it runs one.

        Raises:
            RemoteProtocolError: the message is malformed.
        """
        msg = decode_frontend(message)
        if isinstance(msg, Query):
            return Statement(redact_sql(msg.sql))
        if isinstance(msg, Parse):
            self._remember(self._statements, msg.statement, redact_sql(msg.sql))
        elif isinstance(msg, Bind):
            sql = self._statements.get(msg.statement, "")
            formats = msg.param_formats
            shown = tuple(
                "?" if self.redact_params else _show(v, _format_of(formats, i))
                for i, v in enumerate(msg.values)
            )
            self._remember(self._portals, msg.portal, (sql, shown))
        elif isinstance(msg, Execute):
            sql, params = self._portals.get(msg.portal, ("", ()))
            if msg.portal == "":
                self._portals.pop("", None)
            return Statement(sql, params, "extended")
        elif isinstance(msg, Close):
            (self._statements if msg.kind == "S" else self._portals).pop(msg.name, None)
        elif isinstance(msg, FunctionCall):
            args = tuple("?" if self.redact_params else _show(v, 1) for v in msg.args)
            return Statement(function_call_text(msg.oid), args, "function")
        elif isinstance(msg, Other) and msg.type == b"S":
            pass  # Sync ends an implicit transaction; unnamed portals end with it
        return None

    def _remember(self, table: OrderedDict[str, _V], name: str, value: _V) -> None:
        table.pop(name, None)
        table[name] = value
        while len(table) > self.max_entries:
            table.popitem(last=False)


LARGE_OBJECT_FUNCTIONS: Final = {
    715: "lo_create",
    952: "lo_open",
    953: "lo_close",
    954: "loread",
    955: "lowrite",
    956: "lo_lseek",
    957: "lo_creat",
    958: "lo_tell",
    964: "lo_unlink",
    1004: "lo_truncate",
    3170: "lo_lseek64",
    3171: "lo_tell64",
    3172: "lo_truncate64",
}
"""The built-in functions libpq calls through the fastpath (FunctionCall) for large objects
(``lo_import``, ``\\lo_export`` in psql...). Built-in OIDs are fixed in PostgreSQL's catalog
(``pg_proc.dat``); the integration tests check these against the server's ``pg_proc``."""


def function_call_text(oid: int) -> str:
    """What a FunctionCall's ``db.session.query`` says: the function's name when it is a
    built-in large-object one (a user function's OID names nothing without the catalog)."""
    name = LARGE_OBJECT_FUNCTIONS.get(oid)
    return f"function call {name} (oid {oid})" if name else f"function call oid {oid}"


_TRACKED: Final = frozenset(b"QPBECF")
"""The frontend message types :class:`StatementTracker` reads (Query, Parse, Bind, Execute, Close,
FunctionCall); the others (CopyData, Sync, Describe, Flush, Terminate...) are only framed."""


class LengthFramed:
    """Where a stream of typed messages stands between two chunks, for scanners that walk it
    by length: the bytes of a skipped message still to come, and the start of a message (or a
    header) the last chunk cut, held until it is whole."""

    def __init__(self) -> None:
        self._buf = bytearray()
        """The start of a message the last chunk cut (a header, or a message read whole)."""
        self._need = 0
        """How long ``_buf`` must get to hold that header (5) or whole message."""
        self._skip = 0
        """Bytes of an ignored message still to come."""

    def _resume(self, data: bytes | bytearray) -> tuple[bytes | bytearray, int] | None:
        """The bytes to walk from the next message boundary on and where it is in them; None
        when ``data`` only continues a skipped message or a held one not yet whole."""
        size = len(data)
        pos = self._skip
        if pos:
            if pos >= size:
                self._skip = pos - size
                return None
            self._skip = 0
        buf = self._buf
        if buf:
            buf += memoryview(data)[pos:]
            if len(buf) < self._need:
                return None
            data, pos = bytes(buf), 0
            buf.clear()
        return data, pos


class StatementScanner(LengthFramed):
    """The statements of a client's byte stream, chunk by chunk.

    What ``[tracker.feed(m) for m in MessageReader(max_length).feed(chunk)]`` gives (with the
    statements of a chunk that raises dropped: it is not forwarded), and the same
    RemoteProtocolError for the same chunk, at less cost per chunk: a message the tracker
    ignores (a COPY's CopyData, Sync, Describe...) is skipped by its length, never copied nor
    buffered; a Query is decoded in place (no :class:`Message`); only a message the chunk cuts
    is buffered. The fuzz tests hold it to the two-step reference.

    Args:
        tracker: follows prepared statements and portals (its redaction settings apply).
        max_length: the largest message body accepted (as :class:`MessageReader`).
    """

    def __init__(self, tracker: StatementTracker, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        super().__init__()
        self.tracker = tracker
        self.max_length = max_length
        self.copied = 0
        """CopyData payload bytes the client sent (COPY FROM STDIN), for
        :class:`~bastion.protocols.pgcopy.CopyScanner`."""

    @property
    def buffered(self) -> int:
        """Bytes held for a message not complete yet (an ignored one's are not held)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[Statement]:
        """The statements that ``data`` completes, in order.

        Raises:
            RemoteProtocolError: as :meth:`MessageReader.feed` (framing, first) or
                :meth:`StatementTracker.feed` (the first malformed message of the chunk).
        """
        size = len(data)
        if size > 5 and data[0] == 0x51 and not self._buf and not self._skip:
            # The usual read: one whole Query (a chunk of bytes from the transport).
            (length,) = _U32.unpack_from(data, 1)
            if length == size - 1 and length - 4 <= self.max_length and type(data) is bytes:
                statement = _query(data, 5, size)
                if statement is not None:
                    return [statement]
        out: list[Statement] = []
        resumed = self._resume(data)
        if resumed is None:
            return out
        data, pos = resumed
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        buf = self._buf
        failed: RemoteProtocolError | None = None
        tracker = self.tracker
        while size - pos >= 5:
            kind = data[pos]
            (length,) = _U32.unpack_from(data, pos + 1)
            if length < 4:
                raise RemoteProtocolError(f"message length {length} is under 4")
            if length - 4 > self.max_length:
                raise RemoteProtocolError(
                    f"message of {length - 4} bytes exceeds the limit of {self.max_length}"
                )
            if kind < 0x20 or kind > 0x7E:
                raise RemoteProtocolError(f"invalid message type byte 0x{kind:02x}")
            end = pos + 1 + length
            if kind not in _TRACKED:
                if kind == 0x64:  # CopyData
                    self.copied += length - 4
                if end > size:
                    self._skip = end - size
                    pos = size
                    break
                pos = end
                continue
            if end > size:
                buf += memoryview(data)[pos:]
                self._need = end - pos
                pos = size
                break
            if failed is None:  # after a malformed message only the framing is checked
                try:
                    statement = _query(data, pos + 5, end) if kind == 0x51 else None
                    if statement is None:
                        statement = tracker.feed(Message(bytes((kind,)), data[pos + 5 : end]))
                    if statement is not None:
                        out.append(statement)
                except RemoteProtocolError as exc:
                    failed = exc
            pos = end
        if pos < size:  # a header cut short
            buf += memoryview(data)[pos:]
            self._need = 5
        if failed is not None:
            raise failed
        return out


def _query(data: bytes, start: int, end: int) -> Statement | None:
    """The statement of a well-formed Query body ``data[start:end]`` (one NUL, at its end, UTF-8),
    without a :class:`Message`; None for anything else (the tracker then says what is wrong)."""
    if data.find(b"\x00", start, end) != end - 1:
        return None
    try:
        sql = data[start : end - 1].decode()
    except UnicodeDecodeError:
        return None
    return Statement(redact_sql(sql))


def _format_of(formats: tuple[int, ...], i: int) -> int:
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    return formats[i] if i < len(formats) else 0


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what} is not UTF-8") from None


class BackendKeyScanner:
    """Finds the BackendKeyData (``K``: process id and secret key) among the first messages
    the server sends after the startup, so that a later CancelRequest can be routed to the
    session it belongs to. Stops at ReadyForQuery or ErrorResponse (or after 64 KiB)."""

    _LIMIT = 64 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._seen = 0
        self.done = False
        self.key: tuple[int, int] | None = None
        """``(pid, secret)`` once seen (4-byte keys only: protocol 3.0)."""

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self._buffer += data
        self._seen += len(data)
        buf, pos = self._buffer, 0
        while len(buf) - pos >= 5:
            kind = buf[pos]
            (length,) = _U32.unpack_from(buf, pos + 1)
            end = pos + 1 + length
            if length < 4 or end > len(buf):
                self.done = length < 4
                break
            if kind == ord("K") and length == 12:
                pid, secret = struct.unpack_from("!iI", buf, pos + 5)
                self.key = (pid, secret)
            elif kind in (ord("Z"), ord("E")):
                self.done = True
                break
            pos = end
        del buf[:pos]
        if self.done or self._seen > self._LIMIT:
            self.done = True
            self._buffer = bytearray()
