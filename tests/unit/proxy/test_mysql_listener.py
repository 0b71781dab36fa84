"""Tests for bastion.proxy.mysql_listener: the greeting offers TLS, bytes after the handshake
are held for the route (the TLS path and refusals run in tests/integration/test_db_mysql.py)."""

from __future__ import annotations

from typing import Any

from bastion.protocols import mysql
from bastion.proxy.mysql_listener import MySQLListener, _Hold


class Listener:
    _next_id = 0


def test_greeting_offers_tls_with_fresh_connection_ids() -> None:
    listener: Any = Listener()
    first = mysql.PacketReader().feed(MySQLListener.greeting(listener))[0]
    second = mysql.PacketReader().feed(MySQLListener.greeting(listener))[0]
    hello = mysql.parse_handshake(first.payload)
    assert hello.capabilities & mysql.CLIENT_SSL and first.seq == 0
    assert mysql.parse_handshake(second.payload).connection_id == hello.connection_id + 1
    assert b"\x00" not in hello.scramble


def test_hold_keeps_early_bytes() -> None:
    hold = _Hold()
    hold.data_received(b"ab")
    hold.data_received(b"c")
    assert bytes(hold.buffer) == b"abc" and hold.eof_received() is False
