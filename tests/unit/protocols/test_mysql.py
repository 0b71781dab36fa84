"""Tests for bastion.protocols.mysql: framing, handshake, OK/ERR, command tracking, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.protocols import mysql
from bastion.protocols.mysql import (
    CommandTracker,
    Forbidden,
    HandshakeResponse,
    MySQLStatement,
    Packet,
    PacketReader,
    PacketScanner,
    UseDatabase,
)
from bastion.protocols.pgcopy import CopyReport


def _cmd(code: int, body: bytes = b"") -> Packet:
    return Packet(0, bytes([code]) + body)


def test_framing_round_trip_with_continuations() -> None:
    big = bytes(range(256)) * (mysql.MAX_PAYLOAD // 256 + 3)
    for payload in (b"", b"x", b"y" * mysql.MAX_PAYLOAD, big):
        wire = mysql.build_packet(5, payload)
        reader = PacketReader(64 * 1024 * 1024)
        got = [
            p for i in range(0, len(wire), 7_000_001) for p in reader.feed(wire[i : i + 7_000_001])
        ]
        assert got == [Packet(5, payload)] and reader.buffered == 0
    # an exact 0xFFFFFF payload is followed by an empty packet
    assert len(mysql.build_packet(0, b"y" * mysql.MAX_PAYLOAD)) == 4 + mysql.MAX_PAYLOAD + 4


def test_reader_refuses_oversized_packets() -> None:
    with pytest.raises(RemoteProtocolError, match="more than 100"):
        PacketReader(100).feed(mysql.build_packet(0, b"x" * 101)[:10])


def test_scanner_follows_boundaries_and_captures_on_demand() -> None:
    wire = (
        mysql.build_packet(1, b"a" * 10) + mysql.build_packet(2, b"") + mysql.build_packet(3, b"c")
    )
    scanner = PacketScanner()
    got = [p for b in wire for p in scanner.feed(bytes([b]), True)]
    assert got == [Packet(1, b"a" * 10), Packet(2, b""), Packet(3, b"c")]
    assert scanner.last_seq == 3
    assert PacketScanner().feed(wire, False) == []


def test_handshake_and_response_round_trip() -> None:
    greeting = mysql.build_handshake(connection_id=7, scramble=b"abcdefghijklmnopqrst")
    parsed = mysql.parse_handshake(greeting)
    assert parsed.connection_id == 7 and parsed.scramble == b"abcdefghijklmnopqrst"
    assert parsed.capabilities == mysql.LOCAL_CAPABILITIES
    assert parsed.plugin == "mysql_native_password"
    resp = HandshakeResponse(
        mysql.LOCAL_CAPABILITIES, 1 << 24, 45, "alice_db", b"\x01" * 20, "app",
        "mysql_native_password", {"_client_name": "libmariadb"},
    )  # fmt: skip
    assert mysql.parse_handshake_response(mysql.build_handshake_response(resp)) == resp
    ssl_req = mysql.build_ssl_request(mysql.LOCAL_CAPABILITIES, 1 << 24, 45)
    assert isinstance(mysql.parse_handshake_response(ssl_req), mysql.SSLRequest)


def test_negotiate_never_asks_for_compression_and_passes_local_files_on() -> None:
    caps = mysql.negotiate(0xFFFFFFFF, 0xFFFFFFFF)
    assert not caps & (mysql.CLIENT_COMPRESS | mysql.CLIENT_SSL)
    assert caps & mysql.CLIENT_PROTOCOL_41 and caps & mysql.CLIENT_LOCAL_FILES
    assert not mysql.negotiate(mysql.LOCAL_CAPABILITIES & ~mysql.CLIENT_LOCAL_FILES, 0xFFFFFFFF) & (
        mysql.CLIENT_LOCAL_FILES
    )  # only when the client asked for it


def test_err_packet_is_4_1_format() -> None:
    wire = mysql.err_packet(2, 1045, "28000", "access denied\nsecond line")
    packet = PacketReader().feed(wire)[0]
    assert packet.seq == 2
    assert mysql.parse_err(packet.payload) == (1045, "28000", "access denied second line")
    assert PacketReader().feed(mysql.ok_packet(2))[0].payload[0] == 0


def test_refusals_of_handshake_parsers() -> None:
    with pytest.raises(RemoteProtocolError, match="4.1"):
        mysql.parse_handshake_response(bytes(32))
    with pytest.raises(RemoteProtocolError, match="refused"):
        mysql.parse_handshake(
            PacketReader().feed(mysql.err_packet(0, 1130, "HY000", "no"))[0].payload
        )
    with pytest.raises(RemoteProtocolError, match="too long"):
        mysql.parse_handshake_response(b"\xff" * 20_000)


def test_password_literals_are_redacted() -> None:
    cases = {
        "ALTER USER bob IDENTIFIED BY 'se''cr\\'et'": "ALTER USER bob IDENTIFIED BY '***'",
        "create user x identified via ed25519 using 'abc'": (
            "create user x identified via ed25519 using '***'"
        ),
        "SET PASSWORD FOR bob = PASSWORD('pw')": "SET PASSWORD FOR bob = PASSWORD('***')",
        "SET PASSWORD = 'hash'": "SET PASSWORD = '***'",
        "GRANT ALL ON *.* TO x IDENTIFIED BY PASSWORD '*ABC'": (
            "GRANT ALL ON *.* TO x IDENTIFIED BY PASSWORD '***'"
        ),
        "select 'IDENTIFIED'": "select 'IDENTIFIED'",
    }
    for sql, want in cases.items():
        assert mysql.redact_sql(sql) == want


def test_placeholders_outside_strings_and_comments() -> None:
    assert mysql.count_placeholders("select ? , '?', \"?\", `a?` /* ? */ -- ?\n, # ?\n ?") == 2


def _prepare_ok(stmt_id: int, params: int) -> Packet:
    return Packet(1, b"\x00" + struct.pack("<IHHxH", stmt_id, 1, params, 0))


def _execute(stmt_id: int, types: list[tuple[int, int]], values: bytes, nulls: int = 0) -> Packet:
    n = len(types)
    body = struct.pack("<IBI", stmt_id, 0, 1)
    if n:
        body += nulls.to_bytes((n + 7) // 8, "little") + b"\x01"
        body += b"".join(bytes(t) for t in types) + values
    return _cmd(mysql.COM_STMT_EXECUTE, body)


def test_prepared_statement_parameters_are_decoded_with_types() -> None:
    tracker = CommandTracker()
    assert (
        tracker.client(
            _cmd(mysql.COM_STMT_PREPARE, b"select * from t where x = ? and s = ? and y = ?")
        )
        is None
    )
    assert tracker.wants_server
    tracker.server(_prepare_ok(9, 3))
    values = struct.pack("<q", -5) + b"\x03abc"
    got = tracker.client(_execute(9, [(8, 0), (253, 0), (3, 0)], values, nulls=0b100))
    assert got == MySQLStatement(
        "select * from t where x = ? and s = ? and y = ?", ("-5", "abc", None), "prepared",
        ("LONGLONG", "VAR_STRING", "LONG"),
    )  # fmt: skip
    # types are remembered when the client does not send them again
    again = (
        struct.pack("<IBI", 9, 0, 1)
        + b"\x00"
        + b"\x00"
        + struct.pack("<q", 7)
        + b"\x01z"
        + struct.pack("<i", 3)
    )
    got2 = tracker.client(_cmd(mysql.COM_STMT_EXECUTE, again))
    assert isinstance(got2, MySQLStatement) and got2.params == ("7", "z", "3")
    redacted = CommandTracker(redact_params=True)
    redacted.client(_cmd(mysql.COM_STMT_PREPARE, b"select ?"))
    redacted.server(_prepare_ok(1, 1))
    got3 = redacted.client(_execute(1, [(8, 0x80)], struct.pack("<Q", 2**64 - 1)))
    assert isinstance(got3, MySQLStatement) and got3.params == ("?",)
    assert got3.param_types == ("LONGLONG UNSIGNED",)


def test_dates_floats_and_unknown_statements() -> None:
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"select ?, ?, ?"))
    tracker.server(_prepare_ok(1, 3))
    values = b"\x07" + struct.pack("<HBBBBB", 2026, 12, 6, 14, 5, 9) + struct.pack("<d", 1.5)
    values += b"\x08" + struct.pack("<BIBBB", 1, 1, 2, 3, 4)
    got = tracker.client(_execute(1, [(12, 0), (5, 0), (11, 0)], values))
    assert isinstance(got, MySQLStatement)
    assert got.params == ("2026-12-06 14:05:09", "1.5", "-26:03:04")
    unknown = tracker.client(_execute(77, [], b""))
    assert isinstance(unknown, MySQLStatement) and "unknown prepared statement 77" in unknown.sql
    short = tracker.client(_execute(1, [(8, 0)], b"\x01"))
    assert isinstance(short, MySQLStatement) and short.params == ("(undecodable)",)


def test_use_change_user_and_replication() -> None:
    tracker = CommandTracker()
    use = tracker.client(_cmd(mysql.COM_INIT_DB, b"other"))
    assert isinstance(use, UseDatabase) and use.name == "other"
    use2 = tracker.client(_cmd(mysql.COM_QUERY, b"USE `we``ird`;"))
    assert isinstance(use2, UseDatabase) and use2.name == "we`ird"
    assert isinstance(tracker.client(_cmd(mysql.COM_CHANGE_USER, b"root\0")), Forbidden)
    assert isinstance(tracker.client(_cmd(0x12, b"")), Forbidden)
    query = tracker.client(_cmd(mysql.COM_QUERY, b"ALTER USER x IDENTIFIED BY 'pw'"))
    assert query == MySQLStatement("ALTER USER x IDENTIFIED BY '***'")
    assert tracker.client(_cmd(mysql.COM_QUIT)) is None
    with pytest.raises(RemoteProtocolError):
        tracker.client(Packet(0, b""))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_handshake_parsers_never_crash(data: bytes) -> None:
    for parse in (mysql.parse_handshake, mysql.parse_handshake_response):
        try:
            parse(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(0, 40))
def test_fuzz_reader_and_tracker_never_crash(chunks: list[bytes], limit: int) -> None:
    reader = PacketReader(limit)
    tracker = CommandTracker()
    scanner = PacketScanner()
    for chunk in chunks:
        for packet in scanner.feed(chunk, True):
            tracker.server(packet)
        try:
            for packet in reader.feed(chunk):
                tracker.client(packet)
        except RemoteProtocolError:
            return


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 3))
def test_fuzz_execute_bodies_never_crash(body: bytes, params: int) -> None:
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"select ?, ?, ?"))
    tracker.server(_prepare_ok(1, params))
    try:
        tracker.client(_cmd(mysql.COM_STMT_EXECUTE, struct.pack("<I", 1) + body))
        tracker.client(_cmd(mysql.COM_STMT_SEND_LONG_DATA, body))
        tracker.client(_cmd(mysql.COM_STMT_CLOSE, body))
    except RemoteProtocolError:
        pass


# -- the fast paths give exactly what the general loops give ------------------------------------


_packets = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=10).map(
    lambda ps: b"".join(mysql.build_packet(s, p) for s, p in ps)
)


@settings(max_examples=300, deadline=None)
@given(
    _packets,
    st.binary(max_size=6),
    st.lists(st.integers(0, 600), max_size=6),
    st.integers(0, 50),
)
def test_reader_fast_path_gives_what_the_general_loop_gives(
    wire: bytes, junk: bytes, cuts: list[int], limit: int
) -> None:
    stream = wire + junk
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    fast, slow = PacketReader(limit), PacketReader(limit)
    for chunk in chunks:
        try:
            want: list[Packet] | str = [
                p for b in chunk for p in slow.feed(bytes([b]))
            ]  # one byte at a time: never the fast path
        except RemoteProtocolError as exc:
            want = str(exc)
        try:
            got: list[Packet] | str = fast.feed(chunk)
        except RemoteProtocolError as exc:
            got = str(exc)
        assert got == want
        if isinstance(want, str):
            return
        assert fast.buffered == slow.buffered


@settings(max_examples=300, deadline=None)
@given(
    _packets,
    st.binary(max_size=3),
    st.lists(st.tuples(st.integers(0, 600), st.booleans()), max_size=8),
)
def test_scanner_fast_path_gives_what_the_general_loop_gives(
    wire: bytes, junk: bytes, cuts: list[tuple[int, bool]]
) -> None:
    stream = wire + junk
    marks = sorted({(c % (len(stream) + 1), cap) for c, cap in cuts})
    points = [p for p, _ in marks]
    captures = [cap for _, cap in marks] + [False]
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    fast, slow = PacketScanner(), PacketScanner()
    for chunk, capture in zip(chunks, captures, strict=True):
        want = [p for b in chunk for p in slow.feed(bytes([b]), capture)]
        assert fast.feed(chunk, capture) == want
        assert fast.last_seq == slow.last_seq


@given(st.text(max_size=12), st.sampled_from(["", " ", "\t", "\u00a0", "\u2003"]))
def test_use_pre_check_never_hides_a_use(rest: str, space: str) -> None:
    for sql in (rest, space + rest, "use " + rest, "u\u017fe " + rest, space + "USE `a`"):
        if mysql._USE.match(sql) is not None:
            assert mysql._may_be_use(sql)


def _row(values: list[str | None]) -> bytes:
    out = b""
    for v in values:
        out += b"\xfb" if v is None else mysql.lenenc_int(len(v.encode())) + v.encode()
    return out


@settings(max_examples=200)
@given(st.lists(st.one_of(st.none(), st.text(max_size=300)), min_size=1, max_size=8))
def test_text_rows_round_trip(values: list[str | None]) -> None:
    assert mysql.parse_text_row(_row(values), len(values)) == values


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=6))
def test_text_rows_from_any_bytes_parse_or_refuse_cleanly(data: bytes, columns: int) -> None:
    try:
        row = mysql.parse_text_row(data, columns)
    except RemoteProtocolError:
        return
    assert len(row) == columns


def test_result_set_framing() -> None:
    assert mysql.parse_column_count(b"\x01") == 1
    for bad in (b"", b"\x00", b"\x01\x00", b"\xfc\x00\x10"):
        with pytest.raises(RemoteProtocolError):
            mysql.parse_column_count(bad)
    assert mysql.is_eof(b"\xfe\x00\x00\x02\x00")
    assert not mysql.is_eof(b"\xfe" + bytes(8))  # a row whose first value is long
    assert not mysql.is_eof(b"\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="after the last column"):
        mysql.parse_text_row(_row(["a", "b"]), 1)
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        mysql.parse_text_row(b"\x02\xff\xfe", 1)


def _ok(affected: int) -> bytes:
    return b"\x00" + mysql.lenenc_int(affected) + b"\x00\x02\x00\x00\x00"


def test_load_data_local_is_counted_and_reported_with_the_rows() -> None:
    """A query naming LOCAL: the server asks for the file (0xFB + name), the client's packets
    until its empty one are the file (counted, never commands), the server's OK ends it with
    the rows it loaded; an ERR ends it as a failure; a query answered otherwise reports
    nothing."""
    tracker = CommandTracker()
    sql = b"LOAD DATA LOCAL INFILE '/tmp/in.csv' INTO TABLE t FIELDS TERMINATED BY ','"
    assert tracker.client(_cmd(mysql.COM_QUERY, sql)) == MySQLStatement(sql.decode())
    assert tracker.wants_server
    assert tracker.server(Packet(1, b"\xfb/tmp/in.csv")) is None
    # File data: any bytes, a command's first byte included, are never commands.
    assert tracker.client(Packet(2, bytes([mysql.COM_CHANGE_USER]) + b"1,a\n")) is None
    assert tracker.client(Packet(3, b"2,b\n" * 10)) is None
    assert tracker.client(Packet(4, b"")) is None
    report = tracker.server(Packet(5, _ok(11)))
    assert report is not None and report.fields() == {
        "direction": "in",
        "bytes": 45,
        "rows": 11,
        "file": "/tmp/in.csv",
    }
    assert report.outcome == "success"
    assert report.sql == "-- LOAD DATA LOCAL INFILE '/tmp/in.csv': 11 rows, 45 bytes"
    assert not tracker.wants_server
    # The next command is a command again.
    assert isinstance(tracker.client(_cmd(mysql.COM_CHANGE_USER, b"root\0")), Forbidden)

    # A load the database refuses after the file (an ERR): a failure without rows.
    tracker.client(_cmd(mysql.COM_QUERY, b"load data local infile 'x' into table nope"))
    tracker.server(Packet(1, b"\xfbx"))
    tracker.client(Packet(2, b"abc"))
    tracker.client(Packet(3, b""))
    failed = tracker.server(Packet(4, mysql.err_packet(4, 1146, "42S02", "no table")[4:]))
    assert failed is not None and failed.outcome == "failure" and failed.rows is None
    assert failed.bytes == 3 and failed.sql == "-- LOAD DATA LOCAL INFILE 'x': failed, 3 bytes"

    # A query that names "local" and gets a result set: nothing to report, nothing armed.
    tracker.client(_cmd(mysql.COM_QUERY, b"select @@local_infile"))
    assert tracker.server(Packet(1, b"\x01")) is None and not tracker.wants_server
    # A client packet outside any command (a file sent to a request nobody checked).
    with pytest.raises(RemoteProtocolError, match="outside any command"):
        tracker.client(Packet(2, b""))


def test_a_file_the_statement_does_not_name_is_forbidden() -> None:
    """A rogue or compromised database asking for another file than the statement's: a
    Forbidden (the caller ends the session before the client sees the request); nothing is
    armed for the client's packets."""
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_QUERY, b"LOAD DATA LOCAL INFILE 'data.csv' INTO TABLE t"))
    refused = tracker.server(Packet(1, b"\xfb/home/alice/.ssh/id_ed25519"))
    assert isinstance(refused, Forbidden) and "id_ed25519" in refused.reason
    with pytest.raises(RemoteProtocolError):
        tracker.client(Packet(2, b"-----BEGIN OPENSSH PRIVATE KEY-----"))


@pytest.mark.parametrize(
    ("sql", "file", "named"),
    [
        ("LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t", "a.csv", True),
        ('load data local infile "a.csv" into table t', "a.csv", True),
        (r"LOAD DATA LOCAL INFILE 'C:\\data\\x.csv' INTO TABLE t", r"C:\data\x.csv", True),
        ("LOAD DATA LOCAL INFILE 'it''s.csv' INTO TABLE t", "it's.csv", True),
        (r"LOAD DATA LOCAL INFILE 'it\'s.csv' INTO TABLE t", "it's.csv", True),
        ("LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t", "b.csv", False),
        ("LOAD DATA LOCAL INFILE 'a.csv.bak' INTO TABLE t", "a.csv", False),
        ("LOAD DATA LOCAL INFILE 'x' INTO TABLE t", "", False),
    ],
)
def test_names_file(sql: str, file: str, named: bool) -> None:
    assert mysql.names_file(sql, file) is named


def test_load_data_local_and_a_prepare_answered_in_order() -> None:
    """A COM_STMT_PREPARE pipelined before a LOAD DATA LOCAL: the first answer is the
    prepare's (PREPARE_OK), the second the file request."""
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"select ?"))
    tracker.client(_cmd(mysql.COM_QUERY, b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t"))
    prepare_ok = b"\x00" + struct.pack("<IHH", 7, 1, 1) + b"\x00\x00\x00"
    assert tracker.server(Packet(1, prepare_ok)) is None
    assert tracker.server(Packet(1, b"\xfbf")) is None
    tracker.client(Packet(2, b"1\n"))
    tracker.client(Packet(3, b""))
    report = tracker.server(Packet(4, _ok(1)))
    assert report is not None and report.file == "f" and report.rows == 1
    executed = tracker.client(
        _cmd(
            mysql.COM_STMT_EXECUTE,
            struct.pack("<IBI", 7, 0, 1) + b"\x00\x01\x08\x00" + struct.pack("<q", 5),
        )
    )
    assert executed == MySQLStatement("select ?", ("5",), "prepared", ("LONGLONG",))


def _progress(seq: int, stage: int = 1, percent: int = 50) -> Packet:
    """A MariaDB progress report: ERR code 0xFFFF, 1, stage, max stage, 1/1000 %, its text."""
    body = bytes([1, stage, 2]) + (percent * 1000).to_bytes(3, "little") + b"\x0ecopy to tmp tab"
    return Packet(seq, b"\xff\xff\xff" + body)


def test_progress_reports_are_passed_over_before_and_inside_answers() -> None:
    """Progress reports (ERR 0xFFFF, MariaDB's long commands) take sequence ids before an
    answer: the prepare's PREPARE_OK after them still names its statement, a file request after
    them is still checked, and one while the database loads a file does not end the
    transfer: the OK after it does, with its rows."""
    assert mysql.is_progress_report(_progress(1).payload)
    assert not mysql.is_progress_report(mysql.err_packet(1, 1146, "42S02", "no table")[4:])
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"select ?"))
    assert tracker.server(_progress(1)) is None and tracker.server(_progress(2)) is None
    assert tracker.wants_server  # the prepare's answer is still to come
    tracker.server(Packet(3, b"\x00" + struct.pack("<IHH", 7, 1, 1) + b"\x00\x00\x00"))
    assert not tracker.wants_server
    executed = tracker.client(
        _cmd(
            mysql.COM_STMT_EXECUTE,
            struct.pack("<IBI", 7, 0, 1) + b"\x00\x01\x08\x00" + struct.pack("<q", 5),
        )
    )
    assert executed == MySQLStatement("select ?", ("5",), "prepared", ("LONGLONG",))

    tracker.client(_cmd(mysql.COM_QUERY, b"LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t"))
    assert tracker.server(_progress(1)) is None
    refused = tracker.server(Packet(2, b"\xfb/etc/shadow"))
    assert isinstance(refused, Forbidden)

    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_QUERY, b"LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t"))
    assert tracker.server(Packet(1, b"\xfba.csv")) is None
    tracker.client(Packet(2, b"1,a\n" * 5))
    tracker.client(Packet(3, b""))
    assert tracker.server(_progress(4, percent=80)) is None
    report = tracker.server(Packet(5, _ok(5)))
    assert report is not None and report.rows == 5 and report.bytes == 20


def test_a_local_greeting_offers_progress_reports_in_front_of_mariadb() -> None:
    _, mariadb = mysql.greeting("5.5.5-10.3.39-MariaDB")
    _, other = mysql.greeting("8.0.36")
    assert mariadb & mysql.MARIADB_CLIENT_PROGRESS and not other >> 32


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.binary(max_size=24)), max_size=12))
def test_fuzz_load_data_local_exchanges_never_crash(steps: list[tuple[bool, int, bytes]]) -> None:
    """Any packets either way after a query naming LOCAL (a file request among them or not):
    only RemoteProtocolError (an empty command) escapes, and a report's numbers are sane."""
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_QUERY, b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t"))
    tracker.server(Packet(1, b"\xfbf"))
    for from_server, seq, payload in steps:
        if from_server:
            report = tracker.server(Packet(seq, payload))
            if isinstance(report, CopyReport):
                assert report.bytes >= 0 and report.outcome in ("success", "failure")
        else:
            try:
                tracker.client(Packet(seq, payload))
            except RemoteProtocolError:
                pass


# -- MariaDB's extended capabilities and bulk execution --------------------------------------


def test_extended_capabilities_travel_in_the_reserved_bytes() -> None:
    bulk = mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    greeting = mysql.parse_handshake(
        mysql.build_handshake(connection_id=1, scramble=b"x" * 20, capabilities=0x200 | bulk)
    )
    assert greeting.capabilities == 0x200 | bulk
    # A MySQL server (CLIENT_LONG_PASSWORD, "CLIENT_MYSQL") has none: its reserved bytes are
    # not read as capabilities.
    mysql_server = bytearray(mysql.build_handshake(connection_id=1, scramble=b"x" * 20))
    mysql_server[mysql_server.index(b"\0", 1) + 1 + 4 + 8 + 1] |= mysql.CLIENT_LONG_PASSWORD
    at = mysql_server.index(b"x" * 12) - 4
    mysql_server[at : at + 4] = b"\xff" * 4
    assert mysql.parse_handshake(bytes(mysql_server)).capabilities >> 32 == 0
    # The client's answer: in the last four filler bytes, the SSLRequest's too.
    resp = HandshakeResponse(0x200 | mysql.CLIENT_SECURE_CONNECTION | bulk, 1 << 24, 45, "u", b"")
    wire = mysql.build_handshake_response(resp)
    assert wire[28:32] == struct.pack("<I", bulk >> 32)
    assert mysql.parse_handshake_response(wire) == resp
    ssl_req = mysql.parse_handshake_response(mysql.build_ssl_request(0x200 | bulk, 1 << 24, 45))
    assert isinstance(ssl_req, mysql.SSLRequest) and ssl_req.capabilities & bulk


def test_negotiate_keeps_only_the_extended_capabilities_the_proxy_carries() -> None:
    bulk = mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    metadata = mysql.MARIADB_CLIENT_EXTENDED_METADATA | mysql.MARIADB_CLIENT_CACHE_METADATA
    progress, unknown = mysql.MARIADB_CLIENT_PROGRESS, 1 << 40
    everything = 0xFFFFFFFF | bulk | metadata | progress | unknown
    assert mysql.negotiate(everything, everything) >> 32 == (bulk | metadata | progress) >> 32
    assert not mysql.negotiate(everything, 0xFFFFFFFF) >> 32  # a MySQL server
    assert not mysql.negotiate(0xFFFFFFFF, everything) >> 32  # a MySQL client


@pytest.mark.parametrize(
    ("server_version", "expected"),
    [
        ("5.5.5-10.11.6-MariaDB-0+deb12u1", (10, 11)),
        ("10.6.12-MariaDB", (10, 6)),
        ("5.5.5-10.5.2-maria-1", (10, 5)),
        ("11.4.2-MariaDB-log", (11, 4)),
        ("8.0.36", None),  # MySQL
        ("MariaDB", None),
        ("5.5.5-x.y-MariaDB", None),
        ("", None),
    ],
)
def test_mariadb_version_reads_major_and_minor(
    server_version: str, expected: tuple[int, int] | None
) -> None:
    assert mysql.mariadb_version(server_version) == expected


@given(st.text(max_size=40))
def test_mariadb_version_never_raises(text: str) -> None:
    got = mysql.mariadb_version(text)
    assert got is None or (len(got) == 2 and all(n >= 0 for n in got))


def test_answer_formats_missing_names_what_the_database_lacks() -> None:
    cache, extended = mysql.MARIADB_CLIENT_CACHE_METADATA, mysql.MARIADB_CLIENT_EXTENDED_METADATA
    client = mysql.CLIENT_DEPRECATE_EOF | cache | extended | mysql.CLIENT_COMPRESS
    assert mysql.answer_formats_missing(client, client) == []
    # MariaDB 10.5: extended metadata, no cached metadata; compression is not a format here.
    assert mysql.answer_formats_missing(client, mysql.CLIENT_DEPRECATE_EOF | extended) == [
        "MARIADB_CLIENT_CACHE_METADATA"
    ]
    assert mysql.answer_formats_missing(client, 0) == [
        "CLIENT_DEPRECATE_EOF",
        "MARIADB_CLIENT_EXTENDED_METADATA",
        "MARIADB_CLIENT_CACHE_METADATA",
    ]
    assert mysql.answer_formats_missing(0, 0) == []  # asked for nothing, nothing lacks


def _bulk(stmt_id: int, rows: bytes, types: list[tuple[int, int]] | None = None) -> Packet:
    body = struct.pack("<IH", stmt_id, 128 if types is not None else 0)
    if types is not None:
        body += b"".join(bytes(t) for t in types)
    return _cmd(mysql.COM_STMT_BULK_EXECUTE, body + rows)


def _rows(tracker: CommandTracker, packet: Packet, per_take: int = 1000) -> list[MySQLStatement]:
    got = tracker.client(packet)
    assert isinstance(got, mysql.BulkExecute)
    out: list[MySQLStatement] = []
    while not got.done:
        taken = got.take(per_take)
        assert len(taken) <= per_take
        out += taken
    assert got.take(5) == []
    return out


def test_bulk_execute_gives_one_statement_per_row_with_its_parameters() -> None:
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"insert into t values (?, ?)"))
    tracker.server(_prepare_ok(4, 2))
    rows = b"".join(
        b"\x00" + struct.pack("<q", n) + (b"\x00\x02v" + str(n).encode() if n % 3 else b"\x01")
        for n in range(1, 8)
    )
    rows += b"\x02\x03"  # DEFAULT, IGNORE
    sql, types = "insert into t values (?, ?)", ("LONGLONG", "VAR_STRING")
    expected = [
        MySQLStatement(sql, (str(n), f"v{n}" if n % 3 else None), "bulk", types)
        for n in range(1, 8)
    ] + [MySQLStatement(sql, ("DEFAULT", "IGNORE"), "bulk", types)]
    for per_take in (1, 3, 1000):  # however the writer takes them, the same rows in order
        assert _rows(tracker, _bulk(4, rows, [(8, 0), (253, 0)]), per_take) == expected
    # types remembered from the last bulk (no SEND_TYPES_TO_SERVER)
    assert _rows(tracker, _bulk(4, b"\x00" + struct.pack("<q", 9) + b"\x01"))[0].params == (
        "9",
        None,
    )
    # pipelined: statement id -1 is the one prepared last, still unanswered
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"insert into u values (?)"))
    piped = _rows(tracker, _bulk(0xFFFFFFFF, b"\x00\x01a\x00\x01b", [(253, 0)]))
    assert [s.params for s in piped] == [("a",), ("b",)] and piped[0].sql.endswith("u values (?)")


def test_bulk_execute_redacts_and_ends_at_a_malformed_row() -> None:
    tracker = CommandTracker(redact_params=True)
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"insert into t values (?)"))
    tracker.server(_prepare_ok(1, 1))
    got = _rows(tracker, _bulk(1, b"\x00\x03abc\x01\x00\x05ab", [(253, 0)]))
    assert [s.params for s in got] == [("?",), (None,), ("(undecodable)",)]
    bad_indicator = _rows(tracker, _bulk(1, b"\x00\x01a\x09", [(253, 0)]))
    assert [s.params for s in bad_indicator] == [("?",), ("(undecodable)",)]
    fresh = CommandTracker()
    fresh.client(_cmd(mysql.COM_STMT_PREPARE, b"insert into t values (?)"))
    fresh.server(_prepare_ok(2, 1))
    # no types ever sent: nothing to decode the rows with
    assert fresh.client(_bulk(2, b"\x00\x01a")) == MySQLStatement(
        "insert into t values (?)", ("(undecodable)",), "bulk"
    )
    unknown = fresh.client(_bulk(77, b""))
    assert isinstance(unknown, MySQLStatement) and "unknown prepared statement 77" in unknown.sql


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 3), st.integers(1, 4))
def test_fuzz_bulk_bodies_never_crash(body: bytes, params: int, per_take: int) -> None:
    """Any bulk body: only statements come out, and taking them ends."""
    tracker = CommandTracker()
    tracker.client(_cmd(mysql.COM_STMT_PREPARE, b"insert into t values (?, ?, ?)"))
    tracker.server(_prepare_ok(1, params))
    got = tracker.client(_cmd(mysql.COM_STMT_BULK_EXECUTE, struct.pack("<I", 1) + body))
    if isinstance(got, mysql.BulkExecute):
        for _ in range(len(body) + 2):
            for statement in got.take(per_take):
                assert isinstance(statement, MySQLStatement)
                assert len(statement.params) in (1, params)
            if got.done:
                break
        assert got.done
    else:
        assert isinstance(got, MySQLStatement)


@pytest.mark.parametrize(
    ("server_version", "greets_as", "bulk", "metadata"),
    [
        ("", mysql.DEFAULT_SERVER_VERSION, False, False),  # not seen yet
        ("8.0.36", "8.0.36", False, False),  # MySQL: no MariaDB-only command may reach it
        ("5.5.5-10.11.6-MariaDB-0+deb12u1", "5.5.5-10.11.6-MariaDB-0+deb12u1", True, True),
        ("5.5.5-10.6.12-maria-1", "5.5.5-10.6.12-maria-1", True, True),
        ("5.5.5-10.5.9-MariaDB", "5.5.5-10.5.9-MariaDB", True, False),  # no cached metadata
    ],
)
def test_a_local_greeting_offers_bulk_only_in_front_of_mariadb(
    server_version: str, greets_as: str, bulk: bool, metadata: bool
) -> None:
    version, capabilities = mysql.greeting(server_version)
    greeting = mysql.parse_handshake(
        mysql.build_handshake(
            connection_id=1, scramble=b"x" * 20, server_version=version, capabilities=capabilities
        )
    )
    assert greeting.server_version == greets_as
    assert bool(greeting.capabilities & mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS) is bulk
    # Without bulk, CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") tells MariaDB's clients there are no
    # extended capabilities at all.
    assert bool(greeting.capabilities & mysql.CLIENT_LONG_PASSWORD) is not bulk
    both = mysql.MARIADB_CLIENT_EXTENDED_METADATA | mysql.MARIADB_CLIENT_CACHE_METADATA
    assert greeting.capabilities & both == (both if metadata else 0)
