"""Tests for bastion.protocols.clienthello: real ClientHellos from stdlib ssl, tables, fuzz."""

from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.protocols.clienthello import MAX_CLIENT_HELLO, ClientHello, parse_client_hello


def real_client_hello(server_hostname: str | None, alpn: list[str] | None) -> bytes:
    """The first flight of a stdlib ``ssl`` client, captured through memory BIOs."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if server_hostname is None:
        context.check_hostname = False
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        content_type, version, length = struct.unpack_from("!BHH", data, offset)
        out.append((content_type, version, data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return out


def refragment(data: bytes, size: int) -> bytes:
    """The same handshake bytes re-cut into records of at most ``size`` bytes."""
    handshake = b"".join(fragment for _, _, fragment in records(data))
    return b"".join(
        struct.pack("!BHH", 22, 0x0301, len(handshake[i : i + size])) + handshake[i : i + size]
        for i in range(0, len(handshake), size)
    )


def vector(length_size: int, body: bytes) -> bytes:
    return len(body).to_bytes(length_size, "big") + body


def extension(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!H", ext_type) + vector(2, body)


def sni(*names: bytes, name_type: int = 0) -> bytes:
    return extension(0, vector(2, b"".join(bytes([name_type]) + vector(2, n) for n in names)))


def alpn(*names: bytes) -> bytes:
    return extension(16, vector(2, b"".join(vector(1, n) for n in names)))


def hello_body(extensions: bytes | None = b"", *, suites: bytes = b"\x13\x01") -> bytes:
    body = b"\x03\x03" + bytes(32) + vector(1, b"") + vector(2, suites) + vector(1, b"\x00")
    return body if extensions is None else body + vector(2, extensions)


def wrap(body: bytes, msg_type: int = 1) -> bytes:
    message = bytes([msg_type]) + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0301, len(message)) + message


@pytest.fixture(scope="module")
def hello() -> bytes:
    return real_client_hello("Node-1.Example.COM", ["bastion-ssh", "h2", "http/1.1"])


def test_real_client_hello_from_stdlib_ssl(hello: bytes) -> None:
    parsed = parse_client_hello(hello)
    assert parsed is not None
    assert parsed.sni == "node-1.example.com"
    assert parsed.alpn == ("bastion-ssh", "h2", "http/1.1")
    assert parsed.legacy_version == 0x0303
    assert 0x0304 in parsed.supported_versions and 0x0304 in parsed.versions
    assert 0x1301 in parsed.cipher_suites
    assert {0, 16, 43} <= set(parsed.extensions)


def test_real_client_hello_without_sni_or_alpn() -> None:
    parsed = parse_client_hello(real_client_hello(None, None))
    assert parsed is not None and parsed.sni is None and parsed.alpn == ()


def test_every_prefix_is_incomplete(hello: bytes) -> None:
    for end in range(len(hello)):
        assert parse_client_hello(hello[:end]) is None, f"prefix of {end} bytes"


@pytest.mark.parametrize("size", [1, 3, 4, 5, 100, 255, 16384])
def test_client_hello_spanning_records(hello: bytes, size: int) -> None:
    fragmented = refragment(hello, size)
    expected = parse_client_hello(hello)
    assert parse_client_hello(fragmented) == expected
    assert parse_client_hello(fragmented[:-1]) is None


def test_trailing_bytes_are_ignored(hello: bytes) -> None:
    assert parse_client_hello(hello + b"\x17\x03\x03garbage") == parse_client_hello(hello)


def test_minimal_hello_without_extensions() -> None:
    parsed = parse_client_hello(wrap(hello_body(None)))
    assert parsed == ClientHello(None, (), 0x0303, (), (0x1301,), ())
    assert parsed.versions == (0x0303,)


def test_non_ascii_alpn_is_kept_losslessly() -> None:
    parsed = parse_client_hello(wrap(hello_body(alpn(b"\xff\x00x", b"h2"))))
    assert parsed is not None and parsed.alpn == ("\xff\x00x", "h2")
    assert parsed.alpn[0].encode("latin-1") == b"\xff\x00x"


def test_other_sni_name_types_are_skipped() -> None:
    parsed = parse_client_hello(wrap(hello_body(sni(b"opaque", name_type=7))))
    assert parsed is not None and parsed.sni is None


INVALID: list[tuple[bytes, str]] = [
    (b"\x17\x03\x03\x00\x05hello", "content type 23"),
    (b"\x15", "content type 21"),
    (b"\x16\x02", "major version 2 is not 3"),
    (b"\x16\x04\x01\x00\x05hello", "0x0401 is not 3.x"),
    (b"\x16\x03\x01\x00\x00", "length 0 is not 1..16384"),
    (b"\x16\x03\x01\x40\x01", "length 16385 is not 1..16384"),
    (wrap(hello_body(), msg_type=2), "must be ClientHello (1), got 2"),
    (
        b"\x16\x03\x01\x00\x04\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big"),
        "exceeds the 65536-byte limit",
    ),
    (wrap(b"\x03\x03" + bytes(10)), "random needs 32 bytes but only 10 remain"),
    (wrap(b"\x03\x03" + bytes(32) + vector(1, bytes(33))), "session_id is longer than 32"),
    (wrap(hello_body(suites=b"")), "cipher_suites must be a non-empty list"),
    (wrap(hello_body(suites=b"\x13")), "cipher_suites must be a non-empty list"),
    (
        wrap(b"\x03\x03" + bytes(32) + b"\x00" + vector(2, b"\x13\x01") + b"\x00"),
        "compression_methods is empty",
    ),
    (wrap(hello_body(b"") + b"x"), "bytes after its extensions"),
    (wrap(hello_body(b"\x00\x10\x00\x05ab")), "extension 16 needs 5 bytes but only 2 remain"),
    (wrap(hello_body(alpn(b"h2") + alpn(b"h2"))), "repeats extension 16"),
    (wrap(hello_body(alpn(b"h2", b""))), "empty protocol name"),
    (wrap(hello_body(extension(16, vector(2, b"")))), "lists no protocol"),
    (wrap(hello_body(extension(16, vector(2, b"\x02h2") + b"x"))), "ALPN extension has trailing"),
    (wrap(hello_body(sni(b"a.example", b"b.example"))), "two host_name entries"),
    (wrap(hello_body(sni(b"bad host"))), "is not a DNS host name"),
    (wrap(hello_body(sni(b"caf\xc3\xa9.example"))), "is not a DNS host name"),
    (wrap(hello_body(sni(b""))), "is not a DNS host name"),
    (wrap(hello_body(sni(b"a" * 254))), "is not a DNS host name"),
    (wrap(hello_body(extension(43, b"\x03\x03\x04\x03"))), "supported_versions must be"),
    (wrap(hello_body(extension(43, b"\x00"))), "supported_versions must be"),
]


@pytest.mark.parametrize(("data", "message"), INVALID)
def test_malformed_hellos_raise_precisely(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_client_hello(data)
    assert message in str(info.value)


def test_oversize_hello_is_refused_from_its_header_alone() -> None:
    header = b"\x16\x03\x01\x40\x00\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parse_client_hello(header)  # the record is far from complete: no waiting for 64 KiB


def test_largest_allowed_hello_parses() -> None:
    padding = extension(21, bytes(MAX_CLIENT_HELLO - len(hello_body(b"")) - 4))
    body = hello_body(padding)
    assert len(body) == MAX_CLIENT_HELLO
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    data = b"".join(
        struct.pack("!BHH", 22, 0x0303, len(message[i : i + 16384])) + message[i : i + 16384]
        for i in range(0, len(message), 16384)
    )
    parsed = parse_client_hello(data)
    assert parsed is not None and parsed.extensions == (21,)


@given(st.binary(max_size=600))
def test_garbage_only_raises_remote_protocol_error(data: bytes) -> None:
    try:
        parse_client_hello(data)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=600))
def test_garbage_after_a_record_header(data: bytes) -> None:
    try:
        parse_client_hello(b"\x16\x03\x01" + struct.pack("!H", len(data)) + b"\x01" + data)
    except RemoteProtocolError:
        pass


@given(st.data())
def test_mutated_real_hello_never_escapes(hello: bytes, data: st.DataObject) -> None:
    mutated = bytearray(hello)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    try:
        result = parse_client_hello(bytes(mutated[:cut]))
    except RemoteProtocolError:
        return
    assert result is None or isinstance(result, ClientHello)
