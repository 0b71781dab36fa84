"""Tests for bastion.protocols.detect: protocol detection and PROXY protocol headers."""

from __future__ import annotations

import importlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import LocalProtocolError, RemoteProtocolError
from bastion.protocols.detect import (
    MAX_PEEK,
    PROXY_V1_MAX_LENGTH,
    PROXY_V2_MAX_LENGTH,
    PROXY_V2_SIGNATURE,
    Detected,
    Kind,
    NeedMore,
    ProxyAddress,
    ProxyCommand,
    ProxyHeader,
    build_proxy_header_v1,
    build_proxy_header_v2,
    detect,
    parse_proxy_header,
)

PG_SSL = struct.pack("!II", 8, 80877103)
PG_GSS = struct.pack("!II", 8, 80877104)
PG_CANCEL = struct.pack("!IIII", 16, 80877102, 1234, 0xDEADBEEF)
PG_STARTUP = struct.pack("!II", 23, 0x00030000) + b"user\x00alice\x00\x00"
PG_STARTUP_32 = struct.pack("!II", 23, 0x00030002) + b"user\x00alice\x00\x00"

VALID: list[tuple[bytes, Kind]] = [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32), Kind.TLS),
    (b"\x16\x03\x00\x00\x10", Kind.TLS),
    (b"\x16\x03\x04\x00\x10", Kind.TLS),
    (b"SSH-2.0-OpenSSH_9.6\r\n", Kind.SSH),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Kind.HTTP),
    (b"POST /v1/login HTTP/1.1\r\n", Kind.HTTP),
    (b"HEAD / HTTP/1.0\r\n", Kind.HTTP),
    (b"PUT /x HTTP/1.1\r\n", Kind.HTTP),
    (b"DELETE /x HTTP/1.1\r\n", Kind.HTTP),
    (b"OPTIONS * HTTP/1.1\r\n", Kind.HTTP),
    (b"PATCH /x HTTP/1.1\r\n", Kind.HTTP),
    (b"CONNECT node:22 HTTP/1.1\r\n", Kind.HTTP),
    (PG_SSL, Kind.POSTGRES_SSL_REQUEST),
    (PG_GSS, Kind.POSTGRES_GSSENC_REQUEST),
    (PG_CANCEL, Kind.POSTGRES_CANCEL_REQUEST),
    (PG_STARTUP, Kind.POSTGRES_STARTUP),
    (PG_STARTUP_32, Kind.POSTGRES_STARTUP),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 443\r\n", Kind.PROXY_V1),
    (b"PROXY UNKNOWN\r\n", Kind.PROXY_V1),
    (PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(12), Kind.PROXY_V2),
]

UNKNOWN = [
    b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b",
    b"hello world\n",
    b"GETX / HTTP/1.1\r\n",  # method must be followed by a space
    b"get / HTTP/1.1\r\n",  # methods are case-sensitive
    b"\x16\x03\x05\x00\x10",  # TLS "3.5" does not exist
    b"\x16\x02\x00\x00\x10",
    b"\x17\x03\x03\x00\x10",  # application data record first
    b"SSH_2.0\r\n",
    b"PROXY\tTCP4",
    struct.pack("!II", 8, 80877105),  # unknown PG request code
    struct.pack("!II", 16, 80877103),  # SSLRequest with the wrong length
    struct.pack("!II", 20000, 0x00030000),  # startup longer than PG allows
    struct.pack("!II", 7, 0x00030000),  # startup shorter than its own header
    struct.pack("!II", 40, 0x00020000),  # protocol 2.0
    b"\r\n\r\n\x00\r\nQUIX\n\x21",
]


@pytest.mark.parametrize(("data", "kind"), VALID, ids=[k.value for _, k in VALID])
def test_detects_each_protocol(data: bytes, kind: Kind) -> None:
    result = detect(data)
    assert isinstance(result, Detected)
    assert result.kind is kind


@pytest.mark.parametrize(("data", "kind"), VALID, ids=[k.value for _, k in VALID])
def test_every_prefix_needs_more_or_is_right(data: bytes, kind: Kind) -> None:
    decided = False
    for end in range(len(data) + 1):
        result = detect(data[:end])
        if isinstance(result, NeedMore):
            assert not decided, "a longer prefix must never go back to NeedMore"
            assert end < result.at_least <= MAX_PEEK
        else:
            decided = True
            assert result.kind is kind, f"prefix {data[:end]!r} misdetected"
    assert decided


@pytest.mark.parametrize("data", UNKNOWN)
def test_unknown_is_detected_not_raised(data: bytes) -> None:
    result = detect(data)
    assert isinstance(result, Detected)
    assert result.kind is Kind.UNKNOWN
    assert repr(data[:4])[2:-1] in result.reason


def test_empty_needs_one_byte() -> None:
    assert detect(b"") == NeedMore(1)


def test_unknown_is_decided_at_the_first_impossible_byte() -> None:
    assert detect(b"X").kind is Kind.UNKNOWN  # type: ignore[union-attr]
    assert detect(b"\x00\x01").kind is Kind.UNKNOWN  # type: ignore[union-attr]


def test_pg_cancel_needs_only_its_first_8_bytes() -> None:
    assert isinstance(detect(PG_CANCEL[:7]), NeedMore)
    assert detect(PG_CANCEL[:8]) == Detected(
        Kind.POSTGRES_CANCEL_REQUEST, "PostgreSQL postgres_cancel_request, length 16"
    )


@given(st.binary(min_size=MAX_PEEK, max_size=64))
def test_max_peek_bytes_always_decide(data: bytes) -> None:
    assert isinstance(detect(data), Detected)


@given(st.binary(max_size=64))
def test_detect_never_raises_and_looks_only_at_max_peek(data: bytes) -> None:
    result = detect(data)
    assert result == detect(data[:MAX_PEEK])
    if isinstance(result, NeedMore):
        assert len(data) < result.at_least <= MAX_PEEK


@given(st.sampled_from(VALID), st.binary(max_size=32))
def test_signature_plus_garbage_keeps_its_kind(valid: tuple[bytes, Kind], tail: bytes) -> None:
    data, kind = valid
    result = detect(data[:MAX_PEEK] + tail)
    assert isinstance(result, Detected) and result.kind is kind


# ------------------------------------------------------------------------ PROXY v1

V1_VALID: list[tuple[bytes, ProxyHeader]] = [
    (
        b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n",
        ProxyHeader(
            1,
            ProxyCommand.PROXY,
            ProxyAddress("192.168.0.1", 56324),
            ProxyAddress("10.0.0.2", 443),
            43,
        ),
    ),
    (
        b"PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 0 65535\r\n",
        ProxyHeader(
            1,
            ProxyCommand.PROXY,
            ProxyAddress("2001:db8::1", 0),
            ProxyAddress("2001:db8::2", 65535),
            53,
        ),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, ProxyCommand.LOCAL, None, None, 15)),
    (
        b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n",
        ProxyHeader(1, ProxyCommand.LOCAL, None, None, 35),
    ),
]


@pytest.mark.parametrize(("data", "expected"), V1_VALID)
def test_proxy_v1_parses(data: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(data + b"\x16\x03\x01rest") == expected
    for end in range(len(data)):
        result = parse_proxy_header(data[:end])
        assert isinstance(result, NeedMore) and result.at_least > end


def test_proxy_v1_worst_case_length_is_accepted() -> None:
    # The spec's worst case: UNKNOWN followed by two full IPv6 addresses and ports.
    addresses = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    worst = b"PROXY UNKNOWN " + addresses + b" 65535 65535\r\n"
    assert len(worst) == PROXY_V1_MAX_LENGTH
    header = parse_proxy_header(worst)
    assert header == ProxyHeader(1, ProxyCommand.LOCAL, None, None, PROXY_V1_MAX_LENGTH)
    tcp6 = b"PROXY TCP6 " + addresses + b" 65535 65535\r\n"
    assert isinstance(parse_proxy_header(tcp6), ProxyHeader)


V1_INVALID: list[tuple[bytes, str]] = [
    (b"PROXY TCP4 " + b"1" * 120, "no CRLF within 107 bytes"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 " + b"2" * 80 + b"\r\n", "no CRLF within 107 bytes"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "must be TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "exactly 5 space-separated fields"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly 5 space-separated fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "exactly 5 space-separated fields"),
    (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "'1.2.3.400' is not a valid IPv4"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "'01.2.3.4' is not a valid IPv4"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "'::1' is not a valid IPv4"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "'1.2.3.4' is not a valid IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "'fe80::1%eth0' is not a valid IPv6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port 65536 is above 65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "port b'080' must be a decimal"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port b'-1' must be a decimal"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not printable ASCII before its CRLF"),
    (b"PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n", "not printable ASCII before its CRLF"),
    (b"PROXY TCP4 1.2.3.4 \xff", "not printable ASCII before its CRLF"),
    (b"PROXY TCP4 1.2.3.4 \x00", "not printable ASCII before its CRLF"),
    (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
]


@pytest.mark.parametrize(("data", "message"), V1_INVALID)
def test_proxy_v1_rejects_precisely(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_proxy_header(data)
    assert message in str(info.value)


def test_proxy_v1_overlong_line_fails_at_107_bytes_without_crlf() -> None:
    line = b"PROXY TCP4 " + b"1" * 200
    assert isinstance(parse_proxy_header(line[:106]), NeedMore)
    with pytest.raises(RemoteProtocolError):
        parse_proxy_header(line[:107])


# ------------------------------------------------------------------------ PROXY v2


def _v2(ver_cmd: int, family: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", ver_cmd, family, size) + payload


V2_INET = struct.pack("!4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1234, 443)
TLV = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP with 3 bytes

V2_VALID: list[tuple[bytes, ProxyHeader]] = [
    (
        _v2(0x21, 0x11, V2_INET),
        ProxyHeader(
            2, ProxyCommand.PROXY, ProxyAddress("10.0.0.1", 1234), ProxyAddress("10.0.0.2", 443), 28
        ),
    ),
    (
        _v2(0x21, 0x11, V2_INET + TLV),
        ProxyHeader(
            2, ProxyCommand.PROXY, ProxyAddress("10.0.0.1", 1234), ProxyAddress("10.0.0.2", 443), 34
        ),
    ),
    (
        _v2(0x21, 0x21, ipaddress.IPv6Address("::1").packed * 2 + b"\x00\x01\x00\x02"),
        ProxyHeader(2, ProxyCommand.PROXY, ProxyAddress("::1", 1), ProxyAddress("::1", 2), 52),
    ),
    (_v2(0x20, 0x00, b""), ProxyHeader(2, ProxyCommand.LOCAL, None, None, 16)),
    (_v2(0x20, 0x11, V2_INET), ProxyHeader(2, ProxyCommand.LOCAL, None, None, 28)),
    (_v2(0x21, 0x00, TLV), ProxyHeader(2, ProxyCommand.PROXY, None, None, 22)),
    (_v2(0x21, 0x31, bytes(216)), ProxyHeader(2, ProxyCommand.PROXY, None, None, 232)),
]


@pytest.mark.parametrize(("data", "expected"), V2_VALID)
def test_proxy_v2_parses(data: bytes, expected: ProxyHeader) -> None:
    assert parse_proxy_header(data + b"SSH-2.0-x\r\n") == expected
    for end in range(len(data)):
        result = parse_proxy_header(data[:end])
        assert isinstance(result, NeedMore) and result.at_least > end


V2_INVALID: list[tuple[bytes, str]] = [
    (_v2(0x11, 0x11, V2_INET), "version must be 2, got 1"),
    (_v2(0x22, 0x11, V2_INET), "command must be LOCAL or PROXY, got 2"),
    (_v2(0x21, 0x12, V2_INET), "transport must be STREAM"),
    (_v2(0x21, 0x41, V2_INET), "family byte 0x41 is not defined"),
    (_v2(0x21, 0x11, V2_INET[:8]), "shorter than its 12-byte address block"),
    (_v2(0x21, 0x21, V2_INET), "shorter than its 36-byte address block"),
    (_v2(0x21, 0x11, b"", length=PROXY_V2_MAX_LENGTH), "exceeds the 2064-byte limit"),
]


@pytest.mark.parametrize(("data", "message"), V2_INVALID)
def test_proxy_v2_rejects_precisely(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_proxy_header(data)
    assert message in str(info.value)


def test_proxy_v2_oversize_fails_from_the_fixed_header_alone() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parse_proxy_header(_v2(0x21, 0x11, b"", length=0xFFFF))


# ------------------------------------------------------------------------ round trips

ip_pairs = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
ports = st.integers(0, 65535)


@given(ip_pairs, ports, ports, st.booleans())
def test_proxy_header_round_trip(
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...],
    sport: int,
    dport: int,
    v2: bool,
) -> None:
    source, destination = ProxyAddress(str(ips[0]), sport), ProxyAddress(str(ips[1]), dport)
    build = build_proxy_header_v2 if v2 else build_proxy_header_v1
    wire = build(source, destination)
    header = parse_proxy_header(wire + b"GET / HTTP/1.1\r\n")
    assert header == ProxyHeader(2 if v2 else 1, ProxyCommand.PROXY, source, destination, len(wire))
    assert detect(wire).kind is (Kind.PROXY_V2 if v2 else Kind.PROXY_V1)  # type: ignore[union-attr]


@given(st.binary(max_size=64))
def test_proxy_v2_tlvs_are_skipped_but_counted(tlvs: bytes) -> None:
    wire = build_proxy_header_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=tlvs)
    header = parse_proxy_header(wire)
    assert isinstance(header, ProxyHeader) and header.length == 28 + len(tlvs)


def test_build_unknown_and_local() -> None:
    assert build_proxy_header_v1(None, None) == b"PROXY UNKNOWN\r\n"
    local = build_proxy_header_v2(None, None, command=ProxyCommand.LOCAL)
    assert parse_proxy_header(local) == ProxyHeader(2, ProxyCommand.LOCAL, None, None, 16)


@pytest.mark.parametrize(
    ("source", "destination"),
    [(("1.2.3.4", 1), ("::1", 2)), (("1.2.3.4", 70000), ("1.2.3.5", 2)), (("nope", 1), None)],
)
def test_build_rejects_bad_input(
    source: tuple[str, int], destination: tuple[str, int] | None
) -> None:
    for build in (build_proxy_header_v1, build_proxy_header_v2):
        with pytest.raises(LocalProtocolError):
            build(source, destination)


# ------------------------------------------------------------------------ fuzz

PREFIXES = [b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", PROXY_V2_SIGNATURE, b""]


@given(st.sampled_from(PREFIXES), st.binary(max_size=300))
def test_parse_proxy_header_only_raises_remote_protocol_error(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    try:
        result = parse_proxy_header(data)
    except RemoteProtocolError:
        return
    if isinstance(result, ProxyHeader):
        assert 0 < result.length <= len(data)
    else:
        assert result.at_least > len(data)


@given(st.sampled_from([w for w, _ in V1_VALID + V2_VALID]), st.data())
def test_truncated_and_garbled_headers_never_misparse(wire: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(wire)))
    garbage = data.draw(st.binary(max_size=40))
    try:
        result = parse_proxy_header(wire[:cut] + garbage)
    except RemoteProtocolError:
        return
    if isinstance(result, ProxyHeader) and cut == len(wire):
        assert result == parse_proxy_header(wire)


def test_all_is_exported() -> None:
    # The package re-exports the function detect(), which shadows the submodule attribute.
    detect_module = importlib.import_module("bastion.protocols.detect")
    public = {n for n in vars(detect_module) if not n.startswith("_") and n[0].isupper()}
    imported = {"Final", "NamedTuple", "LocalProtocolError", "RemoteProtocolError"}
    assert public - imported == {n for n in detect_module.__all__ if n[0].isupper()}


def test_package_all_resolves_and_names_no_submodule() -> None:
    package = importlib.import_module("bastion.protocols")
    assert sorted(package.__all__) == sorted(set(package.__all__))
    for name in package.__all__:
        assert getattr(package, name) is not None
        assert not isinstance(getattr(package, name), type(importlib))
