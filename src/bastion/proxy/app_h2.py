"""HTTP/2 on app hosts: each stream is translated to HTTP/1.1 for the app route.

Layer: ``proxy`` (IO around the ``h2`` library's state machine). A browser or ``curl --http2``
that negotiates ALPN ``h2`` on ``NAME.<proxy>`` gets HTTP/2; the app still sees HTTP/1.1 over
the route's pooled keep-alive connections, as with most reverse proxies. The route
(:mod:`bastion.proxy.app_route`) serves every stream as it serves an HTTP/1.1 request, through
an :class:`H2Stream`: a per-stream stand-in for the client connection that

* holds the request body as it arrives (``DataReceived``), framed as HTTP/1.1 (the
  ``content-length`` the client sent, else chunked), acknowledged to the client's flow-control
  window as the route consumes it (never buffered whole: the window bounds it);
* turns the HTTP/1.1 response the route writes (head, then the body as it comes: Content-Length,
  chunked or until the app closes) into HEADERS and DATA frames within the client's flow-control
  windows; ``drain`` waits for window updates, so a slow client slows the app down.

:func:`request_head` builds the HTTP/1.1 head of a stream from its header block (pseudo-headers
to the request line and ``Host``; cookie crumbs joined with ``; `` as RFC 9113 8.2.3 says); the
route's strict parser then checks it as it checks any head. Connection-specific headers are
refused by ``h2`` itself; extended CONNECT (WebSockets over HTTP/2) is not offered, so browsers
open their WebSockets over HTTP/1.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from h2.connection import H2Connection
from h2.exceptions import H2Error

from bastion.protocols.http1 import BadMessage, ResponseHead, find_head_end, parse_response_head

__all__ = ["Dechunker", "H2Stream", "request_head", "response_headers"]

_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_WINDOW_HIGH = 1 << 20
"""Request body bytes held for the route before the client's window is left to close."""


def request_head(headers: list[tuple[bytes, bytes]], has_body: bool) -> bytes:
    """The HTTP/1.1 request head of an HTTP/2 header block (validated by ``h2``).

    Raises:
        BadMessage: 400 without ``:method`` / ``:path`` / authority, 501 for CONNECT.
    """
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    length = False
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            pseudo.setdefault(b":authority", value)
        else:
            length = length or name == b"content-length"
            regular.append((name, value))
    method, path = pseudo.get(b":method", b""), pseudo.get(b":path", b"")
    if method == b"CONNECT":
        raise BadMessage(501, "CONNECT is not served on app hosts")
    authority = pseudo.get(b":authority", b"")
    if not method or not path or not authority:
        raise BadMessage(400, "incomplete HTTP/2 request")
    out = bytearray(method + b" " + path + b" HTTP/1.1\r\nHost: " + authority + b"\r\n")
    for name, value in regular:
        out += name + b": " + value + b"\r\n"
    if cookies:
        out += b"cookie: " + b"; ".join(cookies) + b"\r\n"
    if has_body and not length:
        out += b"transfer-encoding: chunked\r\n"
    return bytes(out + b"\r\n")


def response_headers(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 header block of an HTTP/1.1 response head (connection-specific headers
    dropped, names lowercase)."""
    out = [(b":status", str(head.status).encode())]
    for low, _, value in head.headers:
        if low not in _HOP and low not in head.connection_tokens:
            out.append((low, value))
    return out


class Dechunker:
    """Decodes a chunked body that passes through (already checked by the route's
    :class:`~bastion.protocols.http1.ChunkedScanner`): :meth:`feed` returns the data bytes;
    :attr:`done` after the last chunk's trailer section."""

    __slots__ = ("_buf", "_left", "_state", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailer lines
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        buf = self._buf
        while buf and not self.done:
            if self._state == 1:
                take = min(self._left, len(buf))
                out += buf[:take]
                del buf[:take]
                self._left -= take
                if not self._left:
                    self._state = 2
                continue
            end = buf.find(b"\n")
            if end < 0:
                break
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            if self._state == 0:
                self._left = int(line.split(b";", 1)[0].strip() or b"0", 16)
                self._state = 1 if self._left else 3
            elif self._state == 2:
                self._state = 0
            elif not line:  # the empty line after the trailers
                self.done = True
        return bytes(out)


class H2Stream:
    """One HTTP/2 stream as the app route sees a client connection (see the module doc)."""

    def __init__(
        self,
        conn: H2Connection,
        stream_id: int,
        flush: Callable[[], None],
        abort: Callable[[], None],
        head_only: bool,
        chunked: bool,
    ) -> None:
        self._h2 = conn
        self.stream_id = stream_id
        self._flush = flush
        self._abort = abort
        self._head_only = head_only
        self._chunked = chunked
        self.buf = bytearray()
        self.eof = False
        self.lost = False
        self._unacked = 0
        self._waiter: asyncio.Future[None] | None = None
        self._window: asyncio.Future[None] | None = None
        self._head = bytearray()
        self._headers_sent = False
        self._ended = False
        self._remaining: int | None = None
        self._dechunk: Dechunker | None = None
        self._pending = bytearray()

    # ---- the request body (client to route) ---------------------------------------------

    def feed(self, data: bytes, flow_length: int) -> None:
        if self._chunked and data:
            self.buf += b"%x\r\n" % len(data) + data + b"\r\n"
        else:
            self.buf += data
        self._unacked += flow_length
        if len(self.buf) < _WINDOW_HIGH:
            self._ack()
        self._wake()

    def end_body(self) -> None:
        if self._chunked:
            self.buf += b"0\r\n\r\n"
        self.eof = True
        self._wake()

    def reset(self) -> None:
        """The client reset the stream (or the connection is gone)."""
        self.eof = self.lost = True
        self._wake()
        self._wake_window()

    def _ack(self) -> None:
        if self._unacked and not self.lost:
            self._h2.acknowledge_received_data(self._unacked, self.stream_id)
            self._unacked = 0
            self._flush()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        if self.eof:
            return
        self._ack()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        if len(self.buf) < _WINDOW_HIGH // 2:
            self._ack()
        return data

    # ---- the response (route to client) --------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.lost:
            raise ConnectionResetError("stream reset")
        if not self._headers_sent:
            self._head += data
            end = find_head_end(self._head)
            if end < 0:
                return
            head = parse_response_head(bytes(self._head[:end]))
            rest = bytes(self._head[end:])
            self._head.clear()
            if 100 <= head.status < 200:  # 100 Continue: the client need not wait for it
                if rest:
                    self.write(rest)
                return
            bodyless = self._head_only or head.status in (204, 304) or head.content_length == 0
            self._h2.send_headers(self.stream_id, response_headers(head), end_stream=bodyless)
            self._headers_sent = True
            if bodyless:
                self._ended = True
            elif head.chunked:
                self._dechunk = Dechunker()
            else:
                self._remaining = head.content_length
            data = rest
        if self._ended:
            self._flush()
            return
        if self._dechunk is not None:
            data = self._dechunk.feed(data)
        elif self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
        self._pending += data
        self._send()

    def _complete(self) -> bool:
        if self._dechunk is not None:
            return self._dechunk.done
        return self._remaining == 0

    def _send(self) -> None:
        """Send what the flow-control windows allow; end the stream after the last byte."""
        try:
            while self._pending and not self.lost:
                room = min(
                    self._h2.local_flow_control_window(self.stream_id),
                    self._h2.max_outbound_frame_size,
                    len(self._pending),
                )
                if room <= 0:
                    break
                self._h2.send_data(self.stream_id, bytes(self._pending[:room]))
                del self._pending[:room]
            if not self._pending and not self._ended and self._complete() and not self.lost:
                self._h2.end_stream(self.stream_id)
                self._ended = True
        except H2Error:  # the stream was reset or closed meanwhile
            self.reset()
        self._flush()

    def window_opened(self) -> None:
        if self._pending:
            self._send()
        self._wake_window()

    def _wake_window(self) -> None:
        if self._window is not None and not self._window.done():
            self._window.set_result(None)

    async def drain(self) -> None:
        while self._pending and not self.lost:
            self._window = asyncio.get_running_loop().create_future()
            try:
                await self._window
            finally:
                self._window = None
        if self.lost:
            raise ConnectionResetError("stream reset")

    async def finish(self) -> None:
        """The route is done with this stream: end it (a body that ran until the app closed
        ends here), or reset it when no response was written."""
        if self.lost or self._ended:
            return
        if not self._headers_sent:
            self._h2.reset_stream(self.stream_id)
            self._flush()
            return
        try:
            await self.drain()
        except ConnectionResetError:
            return
        if not self._ended:
            self._h2.end_stream(self.stream_id)
            self._ended = True
            self._flush()

    def close(self) -> None:
        return None

    def abort(self) -> None:
        """Lock or shutdown: the whole client connection goes."""
        self._abort()
