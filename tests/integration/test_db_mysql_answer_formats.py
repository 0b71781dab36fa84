"""The agent refuses a MySQL session whose database lacks an answer format the client
negotiated with a local greeting (``bsh proxy db`` greeting as MariaDB 10.11 in front of a
server that turned out to be 10.5: no cached metadata), in one line, before it sends the
database anything but what the greeting asked for.

The database here is a loopback server that only greets: no MariaDB without cached metadata
(10.5 or older) can be installed on this machine."""

from __future__ import annotations

import asyncio

import pytest

from bastion.agent.db_service import DbAgent, DbAgentDeps
from bastion.clock import SystemClock
from bastion.errors import ConnectionProblem
from bastion.protocols import mysql
from bastion.types.database import Database, DatabaseSpec
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

_VERSION = "5.5.5-10.5.9-MariaDB"


async def _no_certs(user: str) -> object:
    raise AssertionError("the session is refused before any certificate is needed")


async def test_a_database_without_the_clients_answer_format_is_refused_in_one_line() -> None:
    seen: list[bytes] = []

    async def greet_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_caps = (
            mysql.LOCAL_CAPABILITIES & ~mysql.CLIENT_LONG_PASSWORD
            | mysql.CLIENT_SSL | mysql.MARIADB_CLIENT_PROGRESS
            | mysql.MARIADB_CLIENT_STMT_BULK_OPERATIONS | mysql.MARIADB_CLIENT_EXTENDED_METADATA
        )  # fmt: skip
        hello = mysql.build_handshake(
            connection_id=1, scramble=b"s" * 20, server_version=_VERSION,
            capabilities=server_caps,
        )  # fmt: skip
        writer.write(mysql.build_packet(0, hello))
        seen.append(await reader.read(4096))  # what the agent sends next (nothing: it closes)
        writer.close()

    server = await asyncio.start_server(greet_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    database = Database(
        metadata=Metadata(name="my1"),
        spec=DatabaseSpec(protocol="mysql", uri=f"127.0.0.1:{port}", host_id="a1"),
    )
    agent = DbAgent(DbAgentDeps([database], _no_certs, SystemClock()))  # type: ignore[arg-type]
    _, client_caps = mysql.greeting("5.5.5-10.11.6-MariaDB")  # what the client was offered
    params = {"user": "alice_db", "capabilities": str(client_caps)}
    try:
        with pytest.raises(ConnectionProblem) as refused:
            await agent._connect_mysql(database, params, {})
        message = str(refused.value)
        assert "MARIADB_CLIENT_CACHE_METADATA" in message and _VERSION in message
        assert "\n" not in message and "connect again" in message
        assert "EXTENDED_METADATA" not in message  # the server has that one
        await asyncio.sleep(0.1)
        assert seen == [b""]  # no SSLRequest, no handshake answer reached the database
        assert agent.server_versions["my1"] == _VERSION  # the next greeting will be right
    finally:
        server.close()
        await server.wait_closed()
