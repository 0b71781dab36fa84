"""The writer process's loop, on in-memory streams with a fake store (no process)."""

from __future__ import annotations

import io
import sqlite3
import threading
from typing import Any

from bastion.backend.sqlite_child import serve
from bastion.backend.sqlite_writer import encode, read_message
from bastion.errors import CompareFailed, ConnectionProblem, NotFound


class _Db:
    closed = False

    def close(self) -> None:
        self.closed = True


class _FakeStore:
    def __init__(self) -> None:
        self.db = _Db()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def put(self, key: str, value: bytes) -> int:
        self.calls.append(("put", (key, value)))
        return len(self.calls)

    def busy(self) -> None:
        raise sqlite3.OperationalError("database is locked")

    def constraint(self) -> None:
        raise sqlite3.IntegrityError("UNIQUE constraint failed: kv.key")

    def missing(self) -> None:
        raise NotFound("key 'x' not found", key="x")

    def odd(self) -> object:
        return threading.Lock()  # a result that cannot cross


def _run(*requests: tuple[str, tuple[Any, ...]], store: Any = None) -> tuple[list[Any], Any]:
    store = store or _FakeStore()
    out = io.BytesIO()
    serve(io.BytesIO(b"".join(map(encode, requests))), out, "/data/backend.sqlite", lambda: store)
    answers = io.BytesIO(out.getvalue())
    got = []
    while (answer := read_message(answers)) is not None:
        got.append(answer)
    return got, store


def test_it_answers_ready_then_each_call_in_order_and_closes_at_the_end() -> None:
    answers, store = _run(("put", ("a", b"1")), ("put", ("b", b"2")))
    assert answers == [("ok", None), ("ok", 1), ("ok", 2)]
    assert store.calls == [("put", ("a", b"1")), ("put", ("b", b"2"))]
    assert store.db.closed


def test_sqlite_errors_cross_as_the_operator_messages_and_the_loop_goes_on() -> None:
    answers, _ = _run(("busy", ()), ("constraint", ()), ("missing", ()), ("put", ("c", b"3")))
    assert answers[0] == ("ok", None)
    busy, constraint, missing = (value for _, value in answers[1:4])
    assert type(busy) is ConnectionProblem and "the database is busy" in str(busy)
    assert type(constraint) is CompareFailed and "UNIQUE constraint failed" in str(constraint)
    assert type(missing) is NotFound and missing.key == "x"
    assert answers[4] == ("ok", 1)


def test_a_result_that_cannot_cross_is_an_error_of_its_call_only() -> None:
    answers, _ = _run(("odd", ()), ("put", ("d", b"4")))
    status, value = answers[1]
    assert status == "err" and isinstance(value, TypeError) and "pickle" in str(value)
    assert answers[2] == ("ok", 1)


def test_a_store_that_cannot_open_is_the_only_answer() -> None:
    def refuse() -> Any:
        raise sqlite3.DatabaseError("file is not a database")

    out = io.BytesIO()
    serve(io.BytesIO(encode(("put", ("a", b"1")))), out, "/x.sqlite", refuse)
    answers = io.BytesIO(out.getvalue())
    status, value = read_message(answers)
    assert status == "err" and type(value) is ConnectionProblem
    assert str(value) == "sqlite database unusable: file is not a database"
    assert read_message(answers) is None
