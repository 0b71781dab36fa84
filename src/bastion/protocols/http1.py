"""Strict HTTP/1.1 message heads and body framing for the app proxy, decided once and purely.

Layer: ``protocols`` (pure, stdlib only). The app route (:mod:`bastion.proxy.app_route`) reads
each request head with :func:`parse_request_head`, rewrites it and forwards the body by the
framing decided here (:class:`ChunkedScanner` finds where a chunked body ends without
re-encoding it), so the proxy and the app can never disagree on where a request ends:

* only CRLF line ends; no obs-fold (a line starting with SP/HT); header names are tokens, no
  whitespace before the colon; values without control characters;
* ``Content-Length`` digits only, repeated only with the same value; ``Transfer-Encoding``
  only ``chunked`` (anything else: 501) and never together with ``Content-Length`` (400);
* at most :data:`MAX_HEAD` bytes and :data:`MAX_HEADERS` header lines (431).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "BadMessage",
    "ChunkedScanner",
    "RequestHead",
    "ResponseHead",
    "find_head_end",
    "parse_request_head",
    "parse_response_head",
]

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_VCHAR = rb"[^\x00-\x08\x0a-\x1f\x7f]"
_FIELD = re.compile(rb"(" + _TCHAR + rb"+):([ \t]*)(" + _VCHAR + rb"*)\r\n")
"""One well-formed field line: name, the blanks after the colon, the value (trailing blanks
included, stripped by the caller)."""
_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) ([\x21-\x7e]+) (HTTP/1\.[01])")
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class BadMessage(ValueError):
    """A request the proxy refuses; ``status`` is the answer (400, 431, 501)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Head:
    headers: list[tuple[bytes, bytes, bytes]]
    """(lowercase name, name as sent, value) in order."""
    content_length: int | None = None
    chunked: bool = False
    close: bool = False
    """The sender asked to close after this message (``Connection: close`` or HTTP/1.0)."""
    connection_tokens: frozenset[bytes] = field(default_factory=frozenset)
    section: bytes = b""
    """The header section as received (see ``previous`` of :func:`parse_request_head`)."""

    def get(self, name: bytes) -> bytes | None:
        for key, _, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class RequestHead(_Head):
    method: str = ""
    target: str = ""
    version: str = "HTTP/1.1"


@dataclass(slots=True)
class ResponseHead(_Head):
    status: int = 0
    reason: bytes = b""
    version: str = "HTTP/1.1"


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just after the head's ``CRLF CRLF``; -1 when not complete yet.

    Raises:
        BadMessage: 431 when no end within :data:`MAX_HEAD` bytes.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise BadMessage(431, "request header fields too large")
        return -1
    return end + 4


def _fields_fast(block: bytes, head: _Head) -> bool:
    """Parse a header section (each field with its CRLF) in one regex pass; False when it is
    not well-formed (the caller's slow path finds the error).

    ``findall`` skips what does not match, so the section is well-formed exactly when the
    matches, which never overlap, add up to its whole length (they then tile it)."""
    headers: list[tuple[bytes, bytes, bytes]] = []
    framing: list[tuple[bytes, bytes]] | None = None
    total = 0
    for name, blanks, value in _FIELD.findall(block):
        total += len(name) + len(blanks) + len(value) + 3
        low = name.lower()
        value = value.rstrip(b" \t")
        headers.append((low, name, value))
        if low in _FRAMING:
            if framing is None:
                framing = []
            framing.append((low, value))
    if total != len(block):
        return False
    if len(headers) > MAX_HEADERS:
        raise BadMessage(431, "too many header fields")
    head.headers = headers
    if framing is not None:
        _framing(framing, head)
    return True


def _framing(fields: list[tuple[bytes, bytes]], head: _Head) -> None:
    if len(fields) == 1:  # the common case: one Content-Length of plain digits
        low, value = fields[0]
        if low == b"content-length" and value.isdigit() and len(value) <= 18:
            head.content_length = int(value)
            return
    lengths: set[bytes] = set()
    encodings: list[bytes] = []
    tokens: set[bytes] = set()
    for low, value in fields:
        if low == b"content-length":
            for part in value.split(b","):
                part = part.strip()
                if not part.isdigit() or len(part) > 18:
                    raise BadMessage(400, "invalid Content-Length")
                lengths.add(part.lstrip(b"0") or b"0")
        elif low == b"transfer-encoding":
            encodings += [e.strip().lower() for e in value.split(b",") if e.strip()]
        elif low == b"connection":
            tokens |= {t.strip().lower() for t in value.split(b",") if t.strip()}
    if len(lengths) > 1:
        raise BadMessage(400, "conflicting Content-Length values")
    if encodings:
        if lengths:
            raise BadMessage(400, "both Content-Length and Transfer-Encoding")
        if encodings != [b"chunked"]:
            raise BadMessage(501, "only chunked transfer coding is supported")
        head.chunked = True
    elif lengths:
        head.content_length = int(next(iter(lengths)))
    head.connection_tokens = frozenset(tokens)
    head.close = b"close" in tokens


def _fields(lines: list[bytes], head: _Head) -> None:
    if len(lines) > MAX_HEADERS:
        raise BadMessage(431, "too many header fields")
    framing: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line or line[:1] in (b" ", b"\t"):
            raise BadMessage(400, "obsolete line folding is not accepted")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise BadMessage(400, "malformed header field")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise BadMessage(400, "control character in a header value")
        low = name.lower()
        if low in _FRAMING:
            framing.append((low, value))
        head.headers.append((low, name, value))
    _framing(framing, head)


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(start line, header section with each field's CRLF) of a head ending in CRLF CRLF."""
    first = raw.find(b"\r\n")
    if first < 0:
        return raw, b""
    return raw[:first], raw[first + 2 : -2] if raw.endswith(b"\r\n\r\n") else raw[first + 2 :]


def _lines(raw: bytes) -> list[bytes]:
    body = raw[:-4] if raw.endswith(b"\r\n\r\n") else raw
    lines = body.split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise BadMessage(400, "bare CR or LF in the header")
    return lines


def parse_request_head(raw: bytes, previous: RequestHead | None = None) -> RequestHead:
    """Parse a request head (through its final CRLF CRLF).

    ``previous``: the last head parsed on the same connection. When this head's header
    section is byte for byte the same (a client repeating its headers on a keep-alive
    connection), its parsed fields and framing are taken over instead of parsed again: the
    result is the same as parsing, since parsing is a pure function of those bytes. The
    ``headers`` list is then shared: heads are read, never changed.

    Raises:
        BadMessage: with the status to answer.
    """
    start, block = _split_head(raw)
    line = _REQUEST_LINE.fullmatch(start)
    if line is None:
        _lines(raw)  # a bare CR or LF says so first
        raise BadMessage(400, "malformed request line")
    method, target, version = line.groups()
    head = RequestHead(
        headers=[], method=method.decode(), target=target.decode(), version=version.decode()
    )
    if not _take_over(previous, block, head) and not _fields_fast(block, head):
        _fields(_lines(raw)[1:], head)
    if head.version == "HTTP/1.0" and b"keep-alive" not in head.connection_tokens:
        head.close = True
    return head


def _take_over(previous: _Head | None, block: bytes, head: _Head) -> bool:
    """Give ``head`` the fields and framing of ``previous`` when its header section was the
    same bytes ``block`` (else False: parse it)."""
    head.section = block
    if previous is None or previous.section != block or not block:
        return False
    head.headers = previous.headers
    head.content_length = previous.content_length
    head.chunked = previous.chunked
    head.connection_tokens = tokens = previous.connection_tokens
    head.close = b"close" in tokens
    return True


def parse_response_head(raw: bytes, previous: ResponseHead | None = None) -> ResponseHead:
    """Parse an upstream response head (``previous``: the last one parsed on the same
    connection, as for :func:`parse_request_head`).

    Raises:
        BadMessage: 502 for anything malformed (the app's answer cannot be relayed).
    """
    try:
        start, block = _split_head(raw)
        version, _, rest = start.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not _VERSION.fullmatch(version) or len(code) != 3 or not code.isdigit():
            _lines(raw)
            raise BadMessage(502, "malformed status line from the app")
        if _BAD_VALUE.search(reason):
            raise BadMessage(502, "control character in the status line")
        head = ResponseHead(headers=[], status=int(code), reason=reason, version=version.decode())
        if not _take_over(previous, block, head) and not _fields_fast(block, head):
            _fields(_lines(raw)[1:], head)
    except BadMessage as exc:
        raise BadMessage(502, f"bad response from the app: {exc.message}") from None
    if head.version == "HTTP/1.0" and b"keep-alive" not in head.connection_tokens:
        head.close = True
    return head


class ChunkedScanner:
    """Follows a chunked body passing through, to know where it ends (bytes are not changed).

    :meth:`feed` returns how many bytes of ``data`` belong to the body; :attr:`done` turns true
    at the end of the trailer section.

    Raises (from feed):
        BadMessage: 400 on a malformed chunk size or framing.
    """

    __slots__ = ("_line", "_remaining", "_state", "done")

    def __init__(self) -> None:
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailer lines
        self._remaining = 0
        self._line = bytearray()
        self.done = False

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n and not self.done:
            if self._state == 1:
                take = min(self._remaining, n - i)
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = 2
                continue
            j = bytes(view[i:n]).find(b"\n")
            if j < 0:
                self._line += view[i:n]
                i = n
                if len(self._line) > 4096:
                    raise BadMessage(400, "chunk line too long")
                break
            self._line += view[i : i + j + 1]
            i += j + 1
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n"):
                raise BadMessage(400, "chunk line without CRLF")
            line = line[:-2]
            if self._state == 0:
                size = line.split(b";", 1)[0].strip()
                if (
                    not size
                    or len(size) > 15
                    or any(c not in b"0123456789abcdefABCDEF" for c in size)
                ):
                    raise BadMessage(400, "invalid chunk size")
                self._remaining = int(size, 16)
                self._state = 1 if self._remaining else 3
            elif self._state == 2:
                if line:
                    raise BadMessage(400, "chunk data longer than its size")
                self._state = 0
            elif not line:  # end of trailers
                self.done = True
        return i
