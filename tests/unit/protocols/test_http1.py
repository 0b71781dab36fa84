import pytest

from bastion.protocols import http1
from bastion.protocols.http1 import (
    MAX_HEAD,
    BadMessage,
    ChunkedScanner,
    find_head_end,
    parse_request_head,
    parse_response_head,
)


def _req(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_plain_request_and_its_framing():
    head = parse_request_head(_req("POST /x?a=1 HTTP/1.1", "Host: a.p", "Content-Length: 5"))
    assert (head.method, head.target, head.content_length, head.chunked) == (
        "POST",
        "/x?a=1",
        5,
        False,
    )
    assert head.get(b"host") == b"a.p" and not head.close
    assert parse_request_head(_req("GET / HTTP/1.0", "Host: a")).close


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (("POST / HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked"), 400),
        (("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 6"), 400),
        (("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked"), 501),
        (("GET / HTTP/1.1", "X-A: 1", " folded"), 400),
        (("GET / HTTP/1.1", "Host : a"), 400),
        (("GET / HTTP/1.1", "Content-Length: +5"), 400),
        (("GET  / HTTP/1.1",), 400),
        (("GET / HTTP/2.0",), 400),
    ],
)
def test_smuggling_shapes_are_refused(lines, status):
    with pytest.raises(BadMessage) as caught:
        parse_request_head(_req(*lines))
    assert caught.value.status == status


def test_bare_lf_and_oversized_heads():
    with pytest.raises(BadMessage):
        parse_request_head(b"GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\r\n")
    assert find_head_end(b"GET / HTTP/1.1\r\n") == -1
    with pytest.raises(BadMessage) as caught:
        find_head_end(b"x" * (MAX_HEAD + 10))
    assert caught.value.status == 431


def test_response_heads():
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert head.status == 200 and head.chunked
    with pytest.raises(BadMessage) as caught:
        parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n")
    assert caught.value.status == 502


def test_chunked_scanner_finds_the_end_across_pieces():
    body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    scanner = ChunkedScanner()
    used = 0
    for i in range(0, len(body), 3):
        used += scanner.feed(body[i : i + 3])
        if scanner.done:
            break
    assert (
        scanner.done
        and body[:used].endswith(b"\r\n\r\n")
        and body[used:] == b"NEXT"[: len(body) - used]
    )
    with pytest.raises(BadMessage):
        ChunkedScanner().feed(b"zz\r\n")
    with pytest.raises(BadMessage):
        ChunkedScanner().feed(b"1\r\nab\r\n")


@pytest.mark.parametrize(
    "lines",
    [
        ("GET / HTTP/1.1", "Host: a", "X-A:\tb c \t", "Connection: keep-alive, Upgrade"),
        ("GET / HTTP/1.1", "Host: a", "X-Empty:", "Content-Length: 007"),
        ("GET / HTTP/1.1", "Host: a", "X-A: \x01"),
        ("GET / HTTP/1.1", "Host: a", "X-A: 1", "Bad Name: 2"),
        ("GET / HTTP/1.1", "Host: a\rX: 1"),
    ],
)
def test_the_one_regex_fast_path_agrees_with_the_line_by_line_checks(lines):
    raw = _req(*lines)
    expected = http1.RequestHead(headers=[])
    try:
        http1._fields(http1._lines(raw)[1:], expected)
    except BadMessage as exc:
        with pytest.raises(BadMessage) as caught:
            parse_request_head(raw)
        assert caught.value.status == exc.status
        return
    head = parse_request_head(raw)
    assert head.headers == expected.headers
    assert (head.content_length, head.chunked, head.connection_tokens) == (
        expected.content_length,
        expected.chunked,
        expected.connection_tokens,
    )


def test_too_many_fields_and_control_characters_in_a_reason():
    with pytest.raises(BadMessage) as caught:
        parse_request_head(_req("GET / HTTP/1.1", *[f"X-{i}: 1" for i in range(101)]))
    assert caught.value.status == 431
    with pytest.raises(BadMessage):
        parse_response_head(b"HTTP/1.1 200 O\x00K\r\n\r\n")


def test_a_repeated_header_section_is_taken_over_and_gives_what_parsing_gives():
    first = parse_request_head(_req("POST /a HTTP/1.1", "Host: a", "Content-Length: 5"))
    again = parse_request_head(_req("PUT /b HTTP/1.1", "Host: a", "Content-Length: 5"), first)
    assert again.headers is first.headers  # taken over, not parsed
    fresh = parse_request_head(_req("PUT /b HTTP/1.1", "Host: a", "Content-Length: 5"))
    assert (again.method, again.target, again.headers, again.content_length, again.close) == (
        fresh.method,
        fresh.target,
        fresh.headers,
        fresh.content_length,
        fresh.close,
    )
    # HTTP/1.0 with the same section still closes (the version is not part of the section).
    assert parse_request_head(_req("GET / HTTP/1.0", "Host: a", "Content-Length: 5"), first).close
    # Any other section is parsed and checked afresh.
    with pytest.raises(BadMessage) as caught:
        parse_request_head(
            _req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"),
            first,
        )
    assert caught.value.status == 400
    chunked = parse_request_head(_req("POST / HTTP/1.1", "Transfer-Encoding: chunked"), first)
    assert chunked.chunked and chunked.content_length is None
    reply = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    other = parse_response_head(b"HTTP/1.1 404 Nope\r\nContent-Length: 2\r\n\r\n", reply)
    assert other.headers is reply.headers and (other.status, other.content_length) == (404, 2)


def test_the_fast_path_needs_its_matches_to_tile_the_whole_section():
    # A bad line between good ones: findall would skip it, the length check does not.
    for raw in (
        _req("GET / HTTP/1.1", "Host: a", "Bad Line", "X: 1"),
        _req("GET / HTTP/1.1", "Host: a", " X: folded"),
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n",
    ):
        with pytest.raises(BadMessage):
            parse_request_head(raw)
