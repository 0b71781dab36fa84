"""COPY reports from the server's stream (sans-IO): direction, bytes, rows, outcome; any cut
of the stream gives the same reports; nothing the server sends makes it raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.protocols.pgcopy import CopyReport, CopyScanner, CopyWatch, names_copy
from bastion.protocols.postgres import build_message, error_response

READY = build_message(b"Z", b"I")
ROW_DESCRIPTION = build_message(b"T", b"\x00\x01x\x00" + bytes(18))


def _complete(tag: str) -> bytes:
    return build_message(b"C", tag.encode() + b"\x00")


def _copy_out(rows: list[bytes]) -> bytes:
    return (
        build_message(b"H", b"\x00\x00\x01\x00\x00")
        + b"".join(build_message(b"d", row) for row in rows)
        + build_message(b"c")
        + _complete(f"COPY {len(rows)}")
        + READY
    )


def _select() -> bytes:
    return (
        ROW_DESCRIPTION
        + build_message(b"D", b"\x00\x01\x00\x00\x00\x011")
        + _complete("SELECT 1")
        + READY
    )


class _Client:
    """The client's CopyData count, as its StatementScanner keeps it."""

    def __init__(self) -> None:
        self.copied = 0


def _feed(scanner: CopyScanner, chunks: list[bytes]) -> list[CopyReport]:
    return [report for chunk in chunks for report in scanner.feed(chunk)]


def test_copy_out_counts_the_payload_and_rows() -> None:
    rows = [b"1\tapple\n", b"2\tpear\n", b"3\tplum\n"]
    scanner = CopyScanner(lambda: 0)
    assert scanner.feed(_select()) == []  # another command's CommandComplete: no report
    assert scanner.feed(_copy_out(rows) + _select()) == [
        CopyReport("out", sum(map(len, rows)), 3, "success")
    ]


def test_copy_in_takes_the_clients_count_and_a_failure_has_no_rows() -> None:
    client = _Client()
    scanner = CopyScanner(lambda: client.copied)
    client.copied = 500  # sent behind a COPY the server refused: not counted after it is idle
    assert scanner.feed(error_response("permission denied") + READY) == []
    client.copied += 1234  # the client's CopyData right behind its COPY (as asyncpg sends)
    assert scanner.feed(build_message(b"G", b"\x00\x00\x01\x00\x00")) == []
    assert scanner.feed(_complete("COPY 20") + READY) == [CopyReport("in", 1234, 20, "success")]
    # A CopyFail (or a bad row): the server answers with an ErrorResponse.
    scanner.feed(build_message(b"G", b"\x00\x00\x00"))
    client.copied += 10
    failed = scanner.feed(error_response("COPY from stdin failed", code="57014") + READY)
    assert failed == [CopyReport("in", 10, None, "failure")]
    assert failed[0].sql == "-- COPY in: failed, 10 bytes"
    assert failed[0].fields() == {"direction": "in", "bytes": 10, "rows": None}
    # An error outside a copy is none of its business.
    assert scanner.feed(error_response("syntax error") + READY) == []


def test_large_copy_out_is_not_held() -> None:
    big = [b"x" * 65_000] * 20
    stream = _copy_out(big)
    scanner = CopyScanner(lambda: 0)
    reports = []
    for i in range(0, len(stream), 16_384):
        reports += scanner.feed(stream[i : i + 16_384])
        assert len(scanner._buf) <= 64  # a header or the CommandComplete, never rows
    assert reports == [CopyReport("out", 20 * 65_000, 20, "success")]


_rows = st.lists(st.binary(max_size=40), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(_rows, min_size=1, max_size=4), st.lists(st.integers(0, 5_000), max_size=10))
def test_any_cut_gives_the_same_reports(copies: list[list[bytes]], cuts: list[int]) -> None:
    stream = b"".join(_select() + _copy_out(rows) for rows in copies)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [CopyReport("out", sum(map(len, rows)), len(rows), "success") for rows in copies]
    assert _feed(CopyScanner(lambda: 0), [stream]) == expected
    assert _feed(CopyScanner(lambda: 0), chunks) == expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_whatever_the_server_sends_it_never_raises(chunks: list[bytes]) -> None:
    scanner = CopyScanner(lambda: 0)
    for chunk in [build_message(b"H", b"\x00\x00\x00"), *chunks]:
        for report in scanner.feed(chunk):
            assert report.direction == "out" and report.bytes >= 0


def test_a_length_under_4_stops_it() -> None:
    scanner = CopyScanner(lambda: 0)
    assert scanner.feed(b"C\x00\x00\x00\x02" + _copy_out([b"x"])) == []
    assert scanner.broken and scanner.feed(_copy_out([b"x"])) == []


def test_the_watch_starts_scanning_only_for_a_session_that_names_copy() -> None:
    client = _Client()
    watch = CopyWatch(lambda: client.copied)
    assert watch.feed(_select()) == [] and watch.scanner is None  # idle: ends with ReadyForQuery
    watch.statement("select x from t", 0)
    assert watch.feed(_copy_out([b"1\n"])) == [] and watch.scanner is None  # not scanned
    # asyncpg: the COPY and its data in one chunk; the mark is the count before that chunk.
    mark, client.copied = client.copied, 77
    watch.statement("COPY c(x) FROM STDIN (FORMAT binary)", mark)
    assert watch.scanner is not None
    assert watch.feed(build_message(b"G", b"\x01\x00\x00")) == []
    assert watch.feed(_complete("COPY 3") + READY) == [CopyReport("in", 77, 3, "success")]
    assert watch.feed(_copy_out([b"a\n", b"b\n"])) == [CopyReport("out", 4, 2, "success")]


def test_a_copy_named_while_the_server_answers_starts_at_its_next_ready() -> None:
    watch = CopyWatch(lambda: 0)
    first = _select()
    watch.feed(first[:10])  # the server is mid-answer: no boundary known here
    watch.statement("copy t to stdout", 0)
    assert watch.scanner is None
    watch.feed(first[10:])  # ends with ReadyForQuery: the scanner starts after it
    assert watch.scanner is not None
    assert watch.feed(_copy_out([b"x\n"])) == [CopyReport("out", 2, 1, "success")]


def test_names_copy() -> None:
    assert names_copy("\\copy t to 'f'") and names_copy("CoPy t FROM STDIN")
    assert not names_copy("select 1")


def test_a_copy_after_a_flushed_describe_starts_at_its_response() -> None:
    """asyncpg describes the COPY with a Flush (no ReadyForQuery), then runs it: the scanner
    starts at the CopyInResponse, found by its shape, and counts the data sent behind it."""
    client = _Client()
    watch = CopyWatch(lambda: client.copied)
    watch.feed(_select())
    watch.feed(build_message(b"1") + build_message(b"T", b"\x00\x00"))  # no ReadyForQuery
    watch.statement("COPY c FROM STDIN (FORMAT binary)", 0)
    assert watch.scanner is None
    client.copied = 500
    assert watch.feed(b"junk" + build_message(b"G", b"\x01\x00\x01\x00\x01")) == []
    assert watch.scanner is not None
    assert watch.feed(_complete("COPY 9") + READY) == [CopyReport("in", 500, 9, "success")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_looking_for_a_copy_response_never_raises(data: bytes) -> None:
    watch = CopyWatch(lambda: 0)
    watch.feed(b"\x00")
    watch.statement("copy t to stdout", 0)
    for report in watch.feed(data) + watch.feed(_copy_out([b"x"])):
        assert report.bytes >= 0
