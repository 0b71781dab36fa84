"""PostgreSQL CancelRequest routing through the proxy's port: a cancel carrying a live session's
backend key (from that session's client address) reaches that session's query; a cancel with
any other key is refused and audited, and the query goes on."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.protocols.postgres import build_cancel_request
from bastion.testing import missing_peer
from bastion.testing.db_rig import DbRig, start_db_rig
from bastion.testing.peers.postgres import PostgresUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DbRig]:
    try:
        async with start_db_rig(tmp_path) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


async def _send_cancel(port: int, pid: int, secret: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(build_cancel_request(pid, secret))
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(), 10)  # the proxy closes it, answer or not
    except ConnectionResetError:
        pass
    writer.close()


async def _until(check: object, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_cancel_reaches_only_its_own_session(rig: DbRig) -> None:
    import asyncpg

    await rig.login("alice_db", "alice")
    ctx = ssl.create_default_context(cafile=str(rig.tmp / "alice.ca"))
    ctx.check_hostname = False
    ctx.load_cert_chain(rig.tmp / "alice.crt", rig.tmp / "alice.key")
    conn = await asyncpg.connect(
        host="127.0.0.1", port=rig.port, user="alice_db", database="postgres", ssl=ctx,
        timeout=15,
    )  # fmt: skip
    try:
        pid = conn.get_server_pid()
        secret = conn._protocol.backend_secret & 0xFFFFFFFF
        query = asyncio.ensure_future(conn.fetchval("select pg_sleep(30)"))
        await _until(
            lambda: any(
                q["query"] == "select pg_sleep(30)" for q in rig.audit.of("db.session.query")
            )
        )
        # Someone else's guess: refused, audited, the query goes on.
        await _send_cancel(rig.port, pid, (secret + 1) & 0xFFFFFFFF)
        refused = rig.audit.of("db.session.cancel")[-1]
        assert refused["outcome"] == "failure" and "no live session" in refused["reason"]
        await asyncio.sleep(0.3)
        assert not query.done()
        # The session's own key: the query is cancelled.
        await _send_cancel(rig.port, pid, secret)
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(query, 10)
        sent = rig.audit.of("db.session.cancel")[-1]
        assert sent["outcome"] == "success" and sent["user"] == "alice"
    finally:
        await conn.close()
