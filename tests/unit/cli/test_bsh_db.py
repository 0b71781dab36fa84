"""Tests for bastion.cli.bsh_db: the pg_service.conf entry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bastion.cli.bsh_db import _local_handshake, service_entry, update_service_file
from bastion.protocols import mysql


def test_service_entry() -> None:
    entry = service_entry("orders", "proxy.example", 3080, "reader", "", Path("/h/db/orders"))
    assert entry.splitlines() == [
        "[bastion-orders]",
        "host=proxy.example",
        "port=3080",
        "user=reader",
        "sslmode=verify-full",
        "sslrootcert=/h/db/orders.ca",
        "sslcert=/h/db/orders.crt",
        "sslkey=/h/db/orders.key",
    ]


def test_update_replaces_only_its_section() -> None:
    old = "[mine]\nhost=a\n[bastion-orders]\nhost=old\nport=1\n[bastion-other]\nhost=b"
    new = update_service_file(old, "orders", "[bastion-orders]\nhost=new\n")
    assert new == "[mine]\nhost=a\n[bastion-other]\nhost=b\n[bastion-orders]\nhost=new\n"
    assert update_service_file("", "x", "[bastion-x]\n") == "[bastion-x]\n"


def test_remove_service_entry_and_rows() -> None:
    from bastion.cli.bsh_db import db_rows, remove_service_entry
    from bastion.contract.db import DbInfo

    text = "[other]\nhost=x\n[bastion-a]\nhost=p\n[bastion-b]\nhost=q\n"
    assert remove_service_entry(text, "a") == "[other]\nhost=x\n[bastion-b]\nhost=q\n"
    assert remove_service_entry("[bastion-a]\nhost=p\n", "a") == ""
    info = DbInfo(
        name="orders",
        protocol="postgres",
        labels={"team": "x", "env": "prod"},
        db_users=["reader", "{{internal.db_users}}"],
        db_names=["orders"],
        online=True,
    )
    assert db_rows([info]) == [
        ["orders", "postgres", "online", "reader,{{internal.db_users}}", "orders",
         "env=prod,team=x"]
    ]  # fmt: skip


def test_mysql_option_file() -> None:
    from bastion.cli.bsh_db import mysql_option_file

    text = mysql_option_file("my1", "alice_db", "app")
    assert text.splitlines()[1:] == [
        "[client]",
        "host=127.0.0.1",
        "port=13306",
        "user=alice_db",
        "database=app",
        "skip-ssl",
    ]
    assert "database=" not in mysql_option_file("my1", "alice_db", "")


def test_local_service_entry_for_a_tpm_held_key() -> None:
    """psql cannot present a TPM-held key: the entry names bsh proxy db's local listener (no
    key file), and replacing it drops its comment line with the section."""
    from bastion.cli.bsh_db import PG_PORT, local_service_entry, remove_service_entry

    entry = local_service_entry("orders", PG_PORT, "reader", "shop")
    assert entry == (
        "[bastion-orders]\n# a TPM-held key: run bsh proxy db orders --port 15432 first\n"
        "host=127.0.0.1\nport=15432\nuser=reader\ndbname=shop\nsslmode=disable\n"
    )
    assert "sslkey" not in entry
    assert remove_service_entry("[other]\nhost=x\n" + entry, "orders") == "[other]\nhost=x\n"


def test_server_version_comes_from_the_cluster_list_or_is_unknown(monkeypatch: Any) -> None:
    """``bsh proxy db`` greets as the server ``bsh db ls`` lists; an unreachable cluster, or a
    database not listed, gives the generic greeting (no MariaDB-only capability)."""
    from bastion.cli import bsh_db
    from bastion.contract.db import DbInfo, DbList
    from bastion.errors import ConnectionProblem

    version = "5.5.5-10.11.6-MariaDB-0+deb12u1"
    listed = DbList(
        items=[
            DbInfo(
                name="my1", protocol="mysql", labels={}, db_users=[], db_names=[], online=True,
                mysql_server_version=version,
            )
        ]
    )  # fmt: skip
    monkeypatch.setattr(bsh_db, "profile_send", lambda *a, **k: listed)
    assert bsh_db._server_version(None, "my1") == version  # type: ignore[arg-type]
    assert bsh_db._server_version(None, "other") == ""  # type: ignore[arg-type]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionProblem("auth is down")

    monkeypatch.setattr(bsh_db, "profile_send", down)
    assert bsh_db._server_version(None, "my1") == ""  # type: ignore[arg-type]


async def test_a_running_proxy_db_follows_the_listed_server_version() -> None:
    """``bsh proxy db`` asks the cluster again every minute: the version the agent reported
    after the first session reaches the next connections' greeting; an unreachable cluster
    (None) keeps the last known one; a database moved to MySQL loses MariaDB's bulk."""
    import pytest

    from bastion.cli.bsh_db import VERSION_REFRESH, ServerVersion, follow_server_version

    answers: list[str | None] = ["", "5.5.5-10.11.6-MariaDB", None, "8.0.36"]
    seen: list[str] = []
    version = ServerVersion()

    async def fetch() -> str | None:
        return answers.pop(0)

    async def minute(seconds: float) -> None:
        assert seconds == VERSION_REFRESH
        seen.append(version.value)
        if not answers:
            raise LookupError("done")

    with pytest.raises(LookupError):
        await follow_server_version(version, fetch, minute)
    assert seen == ["", "", "5.5.5-10.11.6-MariaDB", "5.5.5-10.11.6-MariaDB", "8.0.36"]


class _Written:
    """What ``_local_handshake`` writes (its greeting), without a socket."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def test_the_local_handshake_keeps_only_the_capabilities_in_effect() -> None:
    """A client may list capabilities the greeting did not offer (MariaDB's cached metadata
    in front of 10.5): they are not in effect, so they are not forwarded for the agent to ask
    the database for; what was offered and asked for stays."""
    cache, bulk = mysql.MARIADB_CLIENT_CACHE_METADATA, mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    asked = mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | bulk | cache
    hello = mysql.HandshakeResponse(asked, 1 << 24, 45, "alice_db", b"")

    async def run() -> tuple[mysql.HandshakeResponse, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(mysql.build_packet(1, mysql.build_handshake_response(hello)))
        written = _Written()
        got = await _local_handshake(reader, written, "5.5.5-10.5.9-MariaDB")  # type: ignore[arg-type]
        return got, bytes(written.data)

    got, greeting = asyncio.run(run())
    offered = mysql.parse_handshake(greeting[4:]).capabilities
    assert offered & bulk and not offered & cache
    assert got.capabilities == asked & ~cache and got.user == "alice_db"
