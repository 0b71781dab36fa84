"""Warm spare connections of the database agent against a real PostgreSQL (``hostssl ... cert``):
the second session of a db user starts on the spare made after the first; a spare made with a
certificate due for renewal, or cut by a database restart, is not used and the session
connects afresh. (The pool's rules are unit-tested: tests/unit/agent/test_db_spares.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.db_service import DbAgent, DbAgentDeps, DbClientCert
from bastion.clock import FakeClock, SystemClock
from bastion.protocols.postgres import MessageReader, build_message
from bastion.testing import missing_peer, new_tls_key
from bastion.testing.db_rig import CLUSTER, DbRig, start_db_rig
from bastion.testing.peers.postgres import PostgresUnavailable
from bastion.types.database import Database, DatabaseSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]

PAIR = ("pg1", "alice_db")
HEADER = {"type": "db", "db": "pg1", "params": {"user": "alice_db", "database": "postgres"}}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DbRig]:
    try:
        async with start_db_rig(tmp_path) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


def agent_for(rig: DbRig, clock: FakeClock) -> DbAgent:
    host = Identity(
        cluster=CLUSTER, user="dbagent-2", kind="host", roles=("db",), host_id="dbagent-2",
        expires=rig.alice.expires,
    )  # fmt: skip

    async def certs(db_user: str) -> DbClientCert:
        key_pem, pub = new_tls_key()
        got = await rig.certs.agent_cert(host, db_user, pub, "test")
        return DbClientCert(got.cert_pem, key_pem.decode(), got.ca_pem, got.expires)

    database = Database(
        metadata=Metadata(name="pg1"),
        spec=DatabaseSpec(uri=f"127.0.0.1:{rig.pg.port}", host_id="dbagent-2"),
    )
    # A long spare_ttl: only the certificate's renewal time retires a spare in this test.
    return DbAgent(DbAgentDeps([database], certs, clock, spare_ttl=3600))


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = MessageReader()
        self.types: list[bytes] = []
        self.ready = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.types += [m.type for m in self.reader.feed(data)]
        if (b"Z" in self.types or b"E" in self.types) and not self.ready.done():
            self.ready.set_result(None)


async def session(agent: DbAgent) -> list[bytes]:
    """One session as the relay runs it: the StartupMessage on the agent's connection, then
    Terminate at ReadyForQuery. Returns the types of the messages PostgreSQL sent."""
    opened = await agent.open(HEADER)
    got = _Reader()
    opened.server.set_protocol(got)
    opened.server.write(opened.to_server)
    try:
        await asyncio.wait_for(got.ready, 10)
    finally:
        opened.server.write(build_message(b"X"))
        opened.server.close()
        await opened.release()
    return got.types


async def spare_ready(agent: DbAgent) -> Any:
    making = agent.warm.pool.spare_of(PAIR)
    assert making is not None
    spare = await asyncio.wait_for(asyncio.shield(making), 10)
    assert spare is not None
    await asyncio.sleep(0)  # its done callbacks (watch the connection)
    return spare


async def test_second_session_uses_the_spare_and_dead_ones_are_not(rig: DbRig) -> None:
    clock = FakeClock(SystemClock().now())
    agent = agent_for(rig, clock)
    stats = agent.warm.pool.stats
    try:
        assert (await session(agent))[-1:] == [b"Z"] and stats.made == 1 and stats.taken == 0
        await spare_ready(agent)
        assert (await session(agent))[-1:] == [b"Z"]  # started on the spare
        assert (stats.made, stats.taken, stats.stale) == (2, 1, 0)

        # Made with a certificate now due for renewal: closed, the session connects afresh.
        await spare_ready(agent)
        clock.advance(timedelta(minutes=56))
        assert (await session(agent))[-1:] == [b"Z"]
        assert (stats.made, stats.taken) == (3, 1)

        # A database restart cuts the idle spare: dropped, the next session connects afresh.
        await spare_ready(agent)
        await asyncio.to_thread(rig.pg.restart)
        for _ in range(250):
            if agent.warm.pool.spare_of(PAIR) is None:
                break
            await asyncio.sleep(0.02)
        assert agent.warm.pool.spare_of(PAIR) is None and stats.dropped == 1
        assert (await session(agent))[-1:] == [b"Z"]
        assert (stats.made, stats.taken, stats.stale) == (4, 1, 0)
    finally:
        await agent.close()
