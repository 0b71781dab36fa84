"""HTTP/2 on app hosts: header translation, the chunked decoder and one stream's response
turned into frames within the client's flow-control window (h2 client and server in memory)."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded

from bastion.protocols.http1 import BadMessage, parse_request_head, parse_response_head
from bastion.proxy.app_h2 import Dechunker, H2Stream, request_head, response_headers


def test_request_head_from_pseudo_headers_joins_cookie_crumbs() -> None:
    raw = request_head(
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"grafana.proxy.test:3080"),
            (b":path", b"/api?x=1"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-thing", b"yes"),
        ],
        has_body=True,
    )
    head = parse_request_head(raw)
    assert head.method == "POST" and head.target == "/api?x=1"
    assert head.get(b"host") == b"grafana.proxy.test:3080"
    assert head.get(b"cookie") == b"a=1; b=2" and head.chunked  # no content-length: chunked
    with_length = request_head(
        [
            (b":method", b"PUT"),
            (b":authority", b"a.b"),
            (b":path", b"/"),
            (b"content-length", b"3"),
        ],
        has_body=True,
    )
    assert parse_request_head(with_length).content_length == 3
    with pytest.raises(BadMessage) as err:
        request_head([(b":method", b"CONNECT"), (b":authority", b"a.b")], False)
    assert err.value.status == 501
    with pytest.raises(BadMessage):
        request_head([(b":method", b"GET"), (b":path", b"/")], False)  # no authority


def test_response_headers_drop_connection_specific_ones() -> None:
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    )
    assert response_headers(head) == [(b":status", b"200"), (b"content-type", b"text/plain")]


def test_dechunker_follows_pieces_of_any_size() -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    for size in (1, 3, len(body)):
        d, out = Dechunker(), b""
        for i in range(0, len(body), size):
            out += d.feed(body[i : i + size])
        assert out == b"hello world" and d.done


def _pair() -> tuple[H2Connection, H2Connection, int]:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    get = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.b"), (b":path", b"/")]
    client.send_headers(1, get, end_stream=True)
    server.receive_data(client.data_to_send())
    return client, server, 1


def test_a_chunked_response_becomes_frames_within_the_window() -> None:
    client, server, sid = _pair()
    wire: list[bytes] = []
    stream = H2Stream(
        server, sid, lambda: wire.append(server.data_to_send()), lambda: None, False, False
    )
    big = b"x" * 100_000  # more than the default 65535-byte window
    stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim: not sent
    stream.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    stream.write(b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n")
    got, ended, status = b"", False, None
    for _ in range(10):
        for event in client.receive_data(b"".join(wire)):
            if isinstance(event, ResponseReceived):
                status = dict(event.headers or [])[b":status"]
            elif isinstance(event, DataReceived):
                got += event.data or b""
                client.acknowledge_received_data(event.flow_controlled_length or 0, sid)
            elif isinstance(event, StreamEnded):
                ended = True
        wire.clear()
        server.receive_data(client.data_to_send())  # window updates
        stream.window_opened()
        if ended:
            break
    assert status == b"200" and got == big and ended


def test_request_body_is_framed_for_the_route_and_a_head_response_ends_at_once() -> None:
    client, server, sid = _pair()
    wire: list[bytes] = []
    stream = H2Stream(
        server, sid, lambda: wire.append(server.data_to_send()), lambda: None, True, True
    )
    stream.feed(b"abc", 3)
    stream.end_body()
    assert bytes(stream.buf) == b"3\r\nabc\r\n0\r\n\r\n" and stream.eof
    stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")  # HEAD: no body follows
    events = client.receive_data(b"".join(wire))
    assert any(isinstance(e, StreamEnded) for e in events)
