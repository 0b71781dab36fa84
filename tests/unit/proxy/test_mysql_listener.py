"""Tests for bastion.proxy.mysql_listener: the greeting offers TLS, bytes after the handshake
are held for the route (the TLS path and refusals run in tests/integration/test_db_mysql.py)."""

from __future__ import annotations

from typing import Any

from bastion.protocols import mysql
from bastion.proxy.mysql_listener import MySQLListener, _Hold, greets_as


class Listener:
    def __init__(self, server_version: str = "") -> None:
        self._next_id = 0
        self._version, self._capabilities = greets_as(server_version)


def test_greeting_offers_tls_with_fresh_connection_ids() -> None:
    listener: Any = Listener()
    first = mysql.PacketReader().feed(MySQLListener.greeting(listener))[0]
    second = mysql.PacketReader().feed(MySQLListener.greeting(listener))[0]
    hello = mysql.parse_handshake(first.payload)
    assert hello.capabilities & mysql.CLIENT_SSL and first.seq == 0
    assert mysql.parse_handshake(second.payload).connection_id == hello.connection_id + 1
    assert b"\x00" not in hello.scramble
    assert hello.server_version == mysql.DEFAULT_SERVER_VERSION
    assert not hello.capabilities & mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS


def test_a_configured_mariadb_version_offers_bulk_execution() -> None:
    """proxy_service.mysql_server_version naming MariaDB: the port greets as it, with bulk."""
    listener: Any = Listener("5.5.5-10.11.6-MariaDB")
    hello = mysql.parse_handshake(
        mysql.PacketReader().feed(MySQLListener.greeting(listener))[0].payload
    )
    assert hello.server_version == "5.5.5-10.11.6-MariaDB"
    assert hello.capabilities & mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    assert hello.capabilities & mysql.CLIENT_SSL


def test_hold_keeps_early_bytes() -> None:
    hold = _Hold()
    hold.data_received(b"ab")
    hold.data_received(b"c")
    assert bytes(hold.buffer) == b"abc" and hold.eof_received() is False
