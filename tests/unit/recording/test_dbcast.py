from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bastion.recording.asciicast import parse_cast
from bastion.recording.dbcast import DbCastBuilder, DbCastHeader, statement_text

HEADER = DbCastHeader(
    user="alice", db_service="pg1", db_user="app", db_name="shop", protocol="postgres",
    timestamp=1_700_000_000,
)  # fmt: skip


def test_header_names_the_session_and_is_asciicast_v2() -> None:
    data = DbCastBuilder(HEADER).start()
    doc = json.loads(data)
    assert doc["version"] == 2 and doc["timestamp"] == 1_700_000_000
    assert doc["bastion"] == {
        "kind": "db", "user": "alice", "db_service": "pg1", "db_user": "app",
        "db_name": "shop", "protocol": "postgres",
    }  # fmt: skip
    assert parse_cast(data).header.title == "db app@pg1/shop (alice)"


def test_statements_are_timed_output_events_with_their_parameters() -> None:
    b = DbCastBuilder(HEADER)
    data = b.start() + b.statement(0.5, "SELECT 1") + b.statement(1.25, "SELECT $1", ["42", None])
    cast = parse_cast(data)
    assert [(e.time, e.code) for e in cast.events] == [(0.5, "o"), (1.25, "o")]
    assert cast.output() == 'SELECT 1\r\nSELECT $1 -- params: ["42", null]\r\n'


def test_times_never_go_backwards_and_stay_finite() -> None:
    b = DbCastBuilder(HEADER)
    data = b.start() + b.statement(2.0, "a") + b.statement(1.0, "b")
    data += b.statement(float("nan"), "c") + b.statement(-5, "d")
    assert [e.time for e in parse_cast(data).events] == [2.0, 2.0, 2.0, 2.0]


def test_line_breaks_inside_a_statement_show_in_place() -> None:
    assert statement_text("SELECT\n1\r\n", ()) == "SELECT\r\n1\r\n\r\n"


@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(),
            st.lists(st.none() | st.text(), max_size=4),
        ),
        max_size=8,
    ),
    st.text(),
)
def test_any_statements_give_valid_json_lines(
    statements: list[tuple[float, str, list[str | None]]], user: str
) -> None:
    b = DbCastBuilder(DbCastHeader(user=user, db_service="s", db_user=user, db_name="d"))
    data = b.start() + b"".join(b.statement(t, sql, params) for t, sql, params in statements)
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(statements) + 2
    for line in lines[:-1]:
        json.loads(line)  # every line on its own is JSON
    data.decode("utf-8")
    cast = parse_cast(data)
    assert len(cast.events) == len(statements)
    times = [e.time for e in cast.events]
    assert times == sorted(times)
    for event, (_, sql, params) in zip(cast.events, statements, strict=True):
        if "\r" not in sql and "\n" not in sql and not _surrogates(sql, params):
            assert event.data == statement_text(sql, params)
            assert event.data.startswith(sql)


def _surrogates(sql: str, params: list[str | None]) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for s in (sql, *(p or "" for p in params)) for c in s)


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.text(),
    st.lists(st.none() | st.text(), max_size=4),
)
def test_a_statement_line_is_the_encoders_line(seconds: float, sql: str, params: list) -> None:
    """The directly built statement line is byte for byte what the line encoder gives."""
    from bastion.recording import dbcast

    b = DbCastBuilder(DbCastHeader(user="u", db_service="s", db_user="u", db_name="d"))
    line = b.statement(seconds, sql, params)
    expected = dbcast._line([b._last, "o", statement_text(sql, params)])
    assert line == expected
