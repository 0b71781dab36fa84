"""Tests for bastion.protocols.postgres: startup packets, framing, errors, statements (fuzzed)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.protocols.postgres import (
    MAX_MESSAGE_LENGTH,
    MAX_STARTUP_LENGTH,
    PROTOCOL_3,
    SSL_REQUEST,
    CancelRequest,
    GSSENCRequest,
    Message,
    MessageReader,
    SSLRequest,
    StartupMessage,
    Statement,
    StatementScanner,
    StatementTracker,
    build_cancel_request,
    build_message,
    build_startup,
    decode_frontend,
    error_response,
    parse_error_response,
    parse_startup_packet,
    redact_sql,
)

names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)
values = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
)


def parse_msg(type_: bytes, body: bytes) -> Message:
    return Message(type_, body)


def bind_body(
    portal: str, stmt: str, vals: list[bytes | None], formats: tuple[int, ...] = ()
) -> bytes:
    out = portal.encode() + b"\x00" + stmt.encode() + b"\x00"
    out += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    out += struct.pack("!h", len(vals))
    for v in vals:
        out += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return out + struct.pack("!h", 0)


def parse_body(stmt: str, sql: str) -> bytes:
    return stmt.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", 0)


def execute_body(portal: str) -> bytes:
    return portal.encode() + b"\x00" + struct.pack("!i", 0)


# -- startup packets --------------------------------------------------------------------------


def test_ssl_gssenc_cancel() -> None:
    assert parse_startup_packet(SSL_REQUEST) == (SSLRequest(), 8)
    assert parse_startup_packet(struct.pack("!II", 8, 80877104)) == (GSSENCRequest(), 8)
    packet, n = parse_startup_packet(build_cancel_request(42, 0xDEADBEEF) + b"junk") or (None, 0)
    assert packet == CancelRequest(42, 0xDEADBEEF) and n == 16
    assert "3735928559" not in repr(packet)  # the secret never reaches a log line


def test_startup_round_trip_and_defaults() -> None:
    packet, n = parse_startup_packet(build_startup({"user": "alice"})) or (None, 0)
    assert isinstance(packet, StartupMessage)
    assert packet.version == PROTOCOL_3 and packet.user == "alice" and packet.database == "alice"


@given(st.dictionaries(names, values, max_size=10))
def test_startup_round_trip(params: dict[str, str]) -> None:
    raw = build_startup(params)
    got = parse_startup_packet(raw + b"more")
    assert got is not None
    packet, n = got
    assert n == len(raw) and isinstance(packet, StartupMessage) and packet.params == params


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (struct.pack("!II", 4, 0), "length 4"),
        (struct.pack("!II", MAX_STARTUP_LENGTH + 1, PROTOCOL_3), "length"),
        (struct.pack("!II", 8, 1234), "unsupported frontend protocol"),
        (struct.pack("!II", 12, SSL_REQUEST[4:] and 80877103) + b"xxxx", "SSLRequest of length 12"),
        (struct.pack("!II", 12, PROTOCOL_3) + b"a\x00b\x00", "not NUL-terminated"),
        (struct.pack("!II", 10, PROTOCOL_3) + b"a\x00", "pairs"),
        (struct.pack("!II", 13, PROTOCOL_3) + b"\x00junk", "trailing"),
        (struct.pack("!II", 15, PROTOCOL_3) + b"a\x00b\x00a\x00c", "pairs"),
        (struct.pack("!II", 14, PROTOCOL_3) + b"\xff\x00b\x00\x00\x00", "UTF-8"),
    ],
)
def test_startup_refusals(raw: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        parse_startup_packet(raw)


def test_startup_needs_more() -> None:
    raw = build_startup({"user": "alice", "database": "orders"})
    for i in range(len(raw)):
        assert parse_startup_packet(raw[:i]) is None


def test_startup_duplicate_and_too_many() -> None:
    dup = struct.pack("!II", 8 + 9, PROTOCOL_3) + b"a\x00b\x00a\x00c\x00\x00"
    with pytest.raises(RemoteProtocolError, match="twice"):
        parse_startup_packet(dup)
    many = build_startup({f"p{i}": "v" for i in range(65)})
    with pytest.raises(RemoteProtocolError, match="more than 64"):
        parse_startup_packet(many)


@given(st.binary(max_size=200))
def test_startup_fuzz_only_protocol_errors(data: bytes) -> None:
    try:
        got = parse_startup_packet(data)
    except RemoteProtocolError:
        return
    if got is not None:
        assert 8 <= got[1] <= len(data)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_startup_fuzz_lengths_and_codes(length: int, code: int, tail: bytes) -> None:
    data = struct.pack("!II", length, code) + tail
    try:
        got = parse_startup_packet(data)
    except RemoteProtocolError:
        return
    if got is None:
        assert length > len(data)
    else:
        assert got[1] == length <= MAX_STARTUP_LENGTH


# -- typed framing ------------------------------------------------------------------------------


def test_reader_frames_across_chunks() -> None:
    stream = build_message(b"Q", b"select 1\x00") + build_message(b"S") + build_message(b"X")
    reader = MessageReader()
    got: list[Message] = []
    for byte in stream:
        got += reader.feed(bytes([byte]))
    assert [m.type for m in got] == [b"Q", b"S", b"X"] and got[0].body == b"select 1\x00"
    assert reader.buffered == 0


def test_reader_limits() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        MessageReader(max_length=100).feed(b"Q" + struct.pack("!I", 200))
    with pytest.raises(RemoteProtocolError, match="under 4"):
        MessageReader().feed(b"Q" + struct.pack("!I", 3))
    with pytest.raises(RemoteProtocolError, match="type byte"):
        MessageReader().feed(b"\x00" + struct.pack("!I", 4))


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(1, 2000))
def test_reader_fuzz(chunks: list[bytes], limit: int) -> None:
    reader = MessageReader(max_length=limit)
    try:
        for chunk in chunks:
            for msg in reader.feed(chunk):
                assert len(msg.type) == 1 and len(msg.body) <= limit
    except RemoteProtocolError:
        pass


@given(st.lists(st.tuples(st.sampled_from(b"QPBESXCDHF"), st.binary(max_size=30)), max_size=10))
def test_reader_round_trip(messages: list[tuple[int, bytes]]) -> None:
    stream = b"".join(build_message(bytes([t]), b) for t, b in messages)
    got = MessageReader().feed(stream)
    assert [(m.type[0], m.body) for m in got] == messages


# -- errors -------------------------------------------------------------------------------------


def test_error_response_round_trip() -> None:
    raw = error_response('access to db "orders" denied', detail="ask an admin")
    [msg] = MessageReader().feed(raw)
    fields = parse_error_response(msg.body)
    assert msg.type == b"E"
    assert fields["C"] == "28000" and fields["S"] == "FATAL" and fields["D"] == "ask an admin"
    assert fields["M"] == 'access to db "orders" denied'
    with pytest.raises(ValueError, match="SQLSTATE"):
        error_response("x", code="bad")


@given(st.text(max_size=80))
def test_error_response_any_message(text: str) -> None:
    [msg] = MessageReader().feed(error_response(text))
    assert parse_error_response(msg.body)["M"] == text.replace("\x00", "")


# -- frontend messages and statements -----------------------------------------------------------


def test_simple_and_extended_statements() -> None:
    tracker = StatementTracker()
    assert tracker.feed(Message(b"Q", b"select 1\x00")) == Statement("select 1")
    assert tracker.feed(Message(b"P", parse_body("s1", "select $1, $2"))) is None
    assert tracker.feed(Message(b"B", bind_body("", "s1", [b"42", None]))) is None
    assert tracker.feed(Message(b"D", b"P\x00")) is None
    got = tracker.feed(Message(b"E", execute_body("")))
    assert got == Statement("select $1, $2", ("42", None), "extended")
    # binary parameter values are shown as hex; the unnamed portal is gone after Execute
    tracker.feed(Message(b"B", bind_body("p", "s1", [b"\x00\x01"], (1,))))
    assert tracker.feed(Message(b"E", execute_body("p"))) == Statement(
        "select $1, $2", ("\\x0001",), "extended"
    )
    tracker.feed(Message(b"C", b"Ss1\x00"))
    tracker.feed(Message(b"B", bind_body("", "s1", [])))
    assert tracker.feed(Message(b"E", execute_body(""))) == Statement("", (), "extended")


def test_redaction() -> None:
    assert redact_sql("ALTER USER bob PASSWORD 'it''s secret'") == "ALTER USER bob PASSWORD '***'"
    assert redact_sql("create role x login password 'p'") == "create role x login password '***'"
    tracker = StatementTracker(redact_params=True)
    tracker.feed(Message(b"P", parse_body("", "select $1")))
    tracker.feed(Message(b"B", bind_body("", "", [b"secret"])))
    assert tracker.feed(Message(b"E", execute_body(""))) == Statement(
        "select $1", ("?",), "extended"
    )


def test_tracker_is_bounded() -> None:
    tracker = StatementTracker(max_entries=3)
    for i in range(10):
        tracker.feed(Message(b"P", parse_body(f"s{i}", f"select {i}")))
    assert len(tracker._statements) == 3


@pytest.mark.parametrize(
    ("type_", "body", "words"),
    [
        (b"Q", b"select 1", "unterminated"),
        (b"Q", b"select 1\x00x", "trailing"),
        (b"P", b"s\x00select\x00\x00", "truncated"),
        (b"P", b"s\x00select\x00\xff\xff", "negative count"),
        (b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09ab", "truncated"),
        (b"B", b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe", "negative value length"),
        (b"E", b"\x00\x00", "truncated"),
        (b"C", b"Zx\x00", "unknown kind"),
        (b"C", b"", "truncated"),
        (b"Q", b"\xff\x00", "UTF-8"),
    ],
)
def test_malformed_frontend(type_: bytes, body: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        decode_frontend(Message(type_, body))


@given(st.sampled_from(b"QPBECFSDHXd"), st.binary(max_size=80))
def test_frontend_fuzz_only_protocol_errors(type_: int, body: bytes) -> None:
    tracker = StatementTracker()
    try:
        tracker.feed(Message(bytes([type_]), body))
    except RemoteProtocolError:
        pass


def _function_call(oid: int, args: list[bytes | None]) -> Message:
    body = struct.pack("!Ih", oid, 1) + struct.pack("!h", 1) + struct.pack("!h", len(args))
    for arg in args:
        body += struct.pack("!i", -1) if arg is None else struct.pack("!i", len(arg)) + arg
    return Message(b"F", body + struct.pack("!h", 1))


def test_function_calls_name_the_large_object_functions() -> None:
    tracker = StatementTracker()
    lowrite = tracker.feed(_function_call(955, [b"\x00\x00\x00\x01", b"hi"]))
    assert lowrite == Statement(
        "function call lowrite (oid 955)", ("\\x00000001", "\\x6869"), "function"
    )
    other = tracker.feed(_function_call(16384, [None]))
    assert other == Statement("function call oid 16384", (None,), "function")
    redacted = StatementTracker(redact_params=True).feed(_function_call(957, [b"\x00"]))
    assert redacted is not None and redacted.params == ("?",)
    assert redacted.sql == "function call lo_creat (oid 957)"


@given(
    st.lists(values, max_size=5), st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=5)
)
def test_extended_round_trip(sqls: list[str], vals: list[bytes | None]) -> None:
    tracker = StatementTracker()
    for i, sql in enumerate(sqls):
        tracker.feed(Message(b"P", parse_body(f"s{i}", sql)))
        tracker.feed(Message(b"B", bind_body(f"p{i}", f"s{i}", vals, (1,))))
        got = tracker.feed(Message(b"E", execute_body(f"p{i}")))
        assert got is not None and got.sql == redact_sql(sql) and len(got.params) == len(vals)


def test_backend_key_scanner_finds_the_key_before_ready() -> None:
    import struct as _struct

    from bastion.protocols.postgres import BackendKeyScanner, build_message

    wire = (
        build_message(b"R", _struct.pack("!I", 0))
        + build_message(b"S", b"a\0b\0")
        + build_message(b"K", _struct.pack("!iI", 4242, 0xDEADBEEF))
        + build_message(b"Z", b"I")
        + build_message(b"K", _struct.pack("!iI", 1, 1))
    )
    scanner = BackendKeyScanner()
    for i in range(len(wire)):
        scanner.feed(wire[i : i + 1])
    assert scanner.key == (4242, 0xDEADBEEF) and scanner.done
    junk = BackendKeyScanner()
    junk.feed(b"X\x00\x00\x00\x01")
    assert junk.done and junk.key is None


# -- the proxy's one-pass scanner: exactly what the reader and the tracker give ----------------

_names = st.sampled_from(["", "s1", "p1"])
_frontend = st.one_of(
    st.builds(lambda sql: build_message(b"Q", sql.encode() + b"\x00"), values),
    st.builds(lambda body: build_message(b"Q", body), st.binary(max_size=20)),
    st.builds(lambda n, sql: build_message(b"P", parse_body(n, sql)), _names, values),
    st.builds(
        lambda p, n, vals: build_message(b"B", bind_body(p, n, vals)),
        _names,
        _names,
        st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=3),
    ),
    st.builds(lambda p: build_message(b"E", execute_body(p)), _names),
    st.builds(
        lambda k, n: build_message(b"C", k + n.encode() + b"\x00"),
        st.sampled_from([b"S", b"P"]),
        _names,
    ),
    st.builds(
        lambda t, body: build_message(bytes([t]), body),
        st.sampled_from(b"QPBECFSDdcfHX"),
        st.binary(max_size=40),
    ),
    st.binary(min_size=1, max_size=6),  # a broken header now and then
)


def _by_reference(chunks: list[bytes], limit: int) -> list[object]:
    reader, tracker = MessageReader(limit), StatementTracker()
    out: list[object] = []
    for chunk in chunks:
        try:
            found = [s for m in reader.feed(chunk) if (s := tracker.feed(m)) is not None]
        except RemoteProtocolError as exc:
            return [*out, str(exc)]
        out.append(found)
    return out


def _by_scanner(chunks: list[bytes], limit: int) -> list[object]:
    scanner = StatementScanner(StatementTracker(), limit)
    out: list[object] = []
    for chunk in chunks:
        try:
            found = scanner.feed(chunk)
        except RemoteProtocolError as exc:
            return [*out, str(exc)]
        out.append(found)
    return out


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_frontend, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.sampled_from([MAX_MESSAGE_LENGTH, 30, 8]),
)
def test_scanner_gives_what_the_reader_and_tracker_give(
    messages: list[bytes], cuts: list[int], limit: int
) -> None:
    chunks = _cut(b"".join(messages), cuts)
    assert _by_scanner(chunks, limit) == _by_reference(chunks, limit)
    # one message a chunk (the usual read: the fast path)
    assert _by_scanner(messages, limit) == _by_reference(messages, limit)


@settings(max_examples=200, deadline=None)
@given(st.lists(_frontend, min_size=1, max_size=6))
def test_scanner_byte_by_byte(messages: list[bytes]) -> None:
    stream = b"".join(messages)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert _by_scanner(chunks, MAX_MESSAGE_LENGTH) == _by_reference(chunks, MAX_MESSAGE_LENGTH)


def test_scanner_fast_path_and_copy_data() -> None:
    scanner = StatementScanner(StatementTracker())
    query = build_message(b"Q", b"ALTER ROLE x PASSWORD 'secret'\x00")
    assert scanner.feed(query) == [Statement("ALTER ROLE x PASSWORD '***'")]
    assert scanner.feed(bytearray(query)) == [Statement("ALTER ROLE x PASSWORD '***'")]
    # A COPY's data is framed by its length, never buffered (a 1 MiB CopyData in pieces),
    # and its payload counted (for the server side's COPY reports).
    copy = build_message(b"d", b"x" * (1 << 20))
    for i in range(0, len(copy), 4096):
        assert scanner.feed(copy[i : i + 4096]) == []
        assert scanner.buffered == 0
    assert scanner.copied == 1 << 20
    # A statement cut anywhere is buffered until it is whole.
    assert scanner.feed(query[:7]) == [] and scanner.buffered == 7
    assert scanner.feed(query[7:] + build_message(b"S")) == [
        Statement("ALTER ROLE x PASSWORD '***'")
    ]
    assert scanner.buffered == 0
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        StatementScanner(StatementTracker(), 10).feed(copy[:5])
    # Framing errors come first, as the reader raises before the tracker reads anything.
    bad = build_message(b"Q", b"no terminator") + b"Q" + struct.pack("!I", 2)
    with pytest.raises(RemoteProtocolError, match="under 4"):
        StatementScanner(StatementTracker()).feed(bad)
