"""Tests for bastion.agent.db_service: refusals reach the client as ErrorResponses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from bastion.agent.db_service import DbAgent, DbAgentDeps, DbClientCert
from bastion.clock import FakeClock
from bastion.errors import NotFound
from bastion.protocols.postgres import MessageReader, parse_error_response
from bastion.types.database import Database, DatabaseSpec, DatabaseTLS
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Stream(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


async def no_certs(user: str) -> DbClientCert:
    raise AssertionError("not reached")


def agent(*dbs: Database) -> DbAgent:
    return DbAgent(DbAgentDeps(databases=dbs, certs=no_certs, clock=FakeClock(NOW)))


def test_database_lookup() -> None:
    db = Database(metadata=Metadata(name="pg1"), spec=DatabaseSpec(uri="h:1"))
    assert agent(db).database("pg1") is db
    with pytest.raises(NotFound, match="not served by this agent"):
        agent(db).database("other")


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ({"type": "db", "db": "nope", "params": {"user": "u"}}, "not served"),
        ({"type": "db", "db": "pg1", "params": {}}, "no database user"),
    ],
)
async def test_refusals(header: dict[str, Any], words: str) -> None:
    db = Database(metadata=Metadata(name="pg1"), spec=DatabaseSpec(uri="h:1"))
    stream = Stream()
    await agent(db).on_stream(stream, header)
    [message] = MessageReader().feed(bytes(stream.written))
    fields = parse_error_response(message.body)
    assert fields["C"] == "08006" and words in fields["M"] and stream.closed


def test_warm_spares_only_for_postgres_over_tls_when_on() -> None:
    pg = Database(metadata=Metadata(name="pg1"), spec=DatabaseSpec(uri="h:1"))
    plain = Database(
        metadata=Metadata(name="pg2"),
        spec=DatabaseSpec(uri="h:1", tls=DatabaseTLS(mode="insecure-plaintext")),
    )
    my = Database(metadata=Metadata(name="my1"), spec=DatabaseSpec(uri="h:1", protocol="mysql"))
    on = agent(pg, plain, my)
    assert [on._warm(db) for db in (pg, plain, my)] == [True, False, False]
    off = DbAgent(
        DbAgentDeps(databases=[pg], certs=no_certs, clock=FakeClock(NOW), warm_connections=False)
    )
    assert not off._warm(pg)
