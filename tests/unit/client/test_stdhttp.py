"""The stdlib HTTPS transport's reply reading (pure: a fake socket hands out the bytes)."""

from __future__ import annotations

import ssl
from typing import Any, cast

import pytest

from bastion.client.stdhttp import HTTPReply, _read_reply, _Reader, request
from bastion.errors import ConnectionProblem


class FakeSocket:
    """``recv`` returns the given pieces one by one, then EOF (optionally as a TLS EOF)."""

    def __init__(self, *pieces: bytes, tls_eof: bool = False) -> None:
        self.pieces = list(pieces)
        self.tls_eof = tls_eof

    def recv(self, size: int) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)[:size]
        if self.tls_eof:
            raise ssl.SSLEOFError("EOF occurred in violation of protocol")
        return b""


def read(*pieces: bytes, method: str = "POST", tls_eof: bool = False) -> HTTPReply:
    sock = cast(Any, FakeSocket(*pieces, tls_eof=tls_eof))
    return _read_reply(_Reader(sock, "proxy:3080"), method, "proxy:3080")


def test_content_length_reply_split_anywhere_and_left_before_the_close() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    wire = head + b'{"ok": 123}'
    for cut in range(1, len(wire)):
        reply = read(wire[:cut], wire[cut:], b"never read")
        assert (reply.status, reply.body) == (200, b'{"ok": 123}')
        assert reply.headers["content-type"] == "application/json"


def test_chunked_reply_with_extensions_and_trailers() -> None:
    reply = read(
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n",
        b'4;x=1\r\n{"a"\r\n',
        b"3\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: y\r\n\r\n",
    )
    assert (reply.status, reply.body) == (403, b'{"a": 1}')


def test_interim_reply_then_body_up_to_the_close_even_without_close_notify() -> None:
    reply = read(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nall ", b"of it", tls_eof=True
    )
    assert (reply.status, reply.body) == (200, b"all of it")
    assert read(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""


@pytest.mark.parametrize(
    ("pieces", "says"),
    [
        ((b"SSH-2.0-OpenSSH_9.6\r\n\r\n",), "status line"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",), "truncated"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",), "Content-Length"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",), "chunk size"),
        ((b"HTTP/1.1 200 OK\r\nContent-Le",), "truncated"),
        ((b"",), "truncated"),
    ],
)
def test_broken_replies_are_one_clear_error(pieces: tuple[bytes, ...], says: str) -> None:
    with pytest.raises(ConnectionProblem, match=says) as info:
        read(*pieces)
    assert "proxy:3080" in info.value.message


def test_a_bad_address_is_refused_before_connecting() -> None:
    with pytest.raises(ConnectionProblem, match="expected HOST:PORT"):
        request(ssl.create_default_context(), "no-port", "GET", "/")
