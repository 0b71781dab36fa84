"""The writer process's wire: framing, and errors that cross it (no process, no socket)."""

from __future__ import annotations

import io
import pickle
import threading

from hypothesis import given
from hypothesis import strategies as st

from bastion.backend.base import Event, EventType, Item
from bastion.backend.sqlite_writer import answer_for, encode, read_message, write_message
from bastion.errors import AlreadyExists, BastionError, CompareFailed, ConnectionProblem


def test_messages_come_back_in_order_and_the_end_is_none() -> None:
    out = io.BytesIO()
    sent = [("put", (Item("k", b"v"),)), ("ok", [Event(EventType.PUT, Item("k", b"v", None, 3))])]
    for message in sent:
        write_message(out, message)
    stream = io.BytesIO(out.getvalue())
    assert [read_message(stream), read_message(stream)] == sent
    assert read_message(stream) is None


@given(st.binary(max_size=64))
def test_a_truncated_stream_ends_without_an_error(tail: bytes) -> None:
    whole = encode(("current_revision", ()))
    for cut in range(len(whole)):
        assert read_message(io.BytesIO(whole[:cut])) is None
    # a whole message followed by part of the next: the first, then the end
    stream = io.BytesIO(whole + encode(("x", tail))[:5])
    assert read_message(stream) == ("current_revision", ())
    assert read_message(stream) is None


def test_bastion_errors_cross_with_their_class_message_and_key() -> None:
    for exc in (
        AlreadyExists("key 'a' already exists", key="a"),
        CompareFailed("key 'b' changed", key="b"),
        ConnectionProblem("the database is busy (another process holds the write lock)"),
    ):
        status, value = pickle.loads(encode(answer_for(exc))[4:])
        assert status == "err"
        assert type(value) is type(exc) and str(value) == str(exc) and value.key == exc.key


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("a lock inside")
        self.lock = threading.Lock()


def test_an_error_that_cannot_cross_is_sent_as_a_bastion_error_with_its_message() -> None:
    status, value = answer_for(_Unpicklable())
    assert status == "err" and type(value) is BastionError
    assert str(value) == "the sqlite writer failed: _Unpicklable: a lock inside"
    pickle.dumps(value)
