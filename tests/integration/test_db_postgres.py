"""Database access end to end: real PostgreSQL (``hostssl ... cert``), real ``psql`` and asyncpg,
through the proxy's shared port (in-band SSLRequest) and a database agent on a real reverse
tunnel. Allowed query audited (simple and extended protocol), denied db user refused with one
28000 line, a lock cuts a live session."""

from __future__ import annotations

import asyncio
import io
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.auth.guarded import GuardedAuth
from bastion.auth.recordings import GuardedRecordings, RecordingService
from bastion.auth.users import UserService
from bastion.cli.bsh_recordings import play_steps, recording_rows
from bastion.protocols.postgres import LARGE_OBJECT_FUNCTIONS
from bastion.recording.asciicast import parse_cast
from bastion.recording.player import schedule
from bastion.testing import missing_peer, require_binary
from bastion.testing.db_rig import DbRig, start_db_rig
from bastion.testing.peers.postgres import PostgresUnavailable
from bastion.testing.peers.postgres_tls import psql_local
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


async def _psql(conninfo: str, sql: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"),
        conninfo,
        "-X",
        "-Atc",
        sql,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def _until(check: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def _recorded(rig: DbRig, end: dict[str, Any]) -> None:
    """The session's recording: uploaded with the sha256 of ``db.session.end``, listed for its
    owner like ``bsh recordings ls`` (kind db), and ``bsh play`` prints its statements."""
    assert rig.auth is not None and len(end["recording_sha256"]) == 64
    guard = await GuardedAuth.for_identity(rig.auth, UserService(rig.auth), rig.alice, "127.0.0.1")
    recordings = GuardedRecordings(guard, RecordingService(rig.auth))
    for _ in range(250):
        listed = [m for m in await recordings.list() if m.session_id == end["session_id"]]
        if listed:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the db session's recording was not uploaded")
    row = recording_rows([listed[0].model_dump(mode="json")])[0]
    assert row[1:4] == ["alice", "db", "alice_db@pg1/postgres"]
    assert listed[0].sha256 == end["recording_sha256"]
    stored = await recordings.get(end["session_id"], "view")
    out = io.BytesIO()
    play_steps(schedule(parse_cast(stored.data).events), out, lambda _: None)
    assert out.getvalue() == b"select x from t order by x; select current_user\r\n"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DbRig]:
    require_binary("psql")
    try:
        async with start_db_rig(tmp_path) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


async def test_psql_allowed_denied_and_locked(rig: DbRig) -> None:
    # Allowed: psql's simple protocol, through the one port, as alice_db.
    conninfo = await rig.login("alice_db", "alice")
    code, out, err = await _psql(conninfo, "select x from t order by x; select current_user")
    assert code == 0, (err, str(rig.audit.events[-1]))
    assert out.split() == ["1", "2", "alice_db"]
    started = rig.audit.of("db.session.start")
    assert started[-1]["outcome"] == "success" and started[-1]["db_user"] == "alice_db"
    # Query events are committed in batches, all of a session's before its end event.
    await _until(lambda: bool(rig.audit.of("db.session.end")))
    queries = [e["query"] for e in rig.audit.of("db.session.query")]
    assert "select x from t order by x; select current_user" in queries
    assert rig.audit.of("db.session.end")[-1]["bytes_out"] > 0
    await _recorded(rig, rig.audit.of("db.session.end")[-1])

    # Extended protocol with a parameter (asyncpg): the value is audited.
    import asyncpg

    ctx = ssl.create_default_context(cafile=str(rig.tmp / "alice.ca"))
    ctx.check_hostname = False
    ctx.load_cert_chain(rig.tmp / "alice.crt", rig.tmp / "alice.key")
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=rig.port,
        user="alice_db",
        database="postgres",
        ssl=ctx,
        timeout=15,
    )
    try:
        assert await conn.fetchval("select x from t where x = $1", 2) == 2
        # COPY FROM STDIN: its CopyData (about 200 KB, cut anywhere by TLS) is framed by
        # length, not buffered; the statements after it are still audited.
        await conn.execute("create temp table c (x int)")
        await conn.copy_records_to_table("c", records=[(i,) for i in range(20_000)])
        assert await conn.fetchval("select count(*) from c where x >= $1", 0) == 20_000
        # COPY TO STDOUT: the rows and bytes that left are audited (db.session.copy).
        out = io.BytesIO()

        async def sink(chunk: bytes) -> None:
            out.write(chunk)

        await conn.copy_from_query("select x from c where x < 1000", output=sink)
    finally:
        await conn.close()
    await _until(lambda: len(rig.audit.of("db.session.copy")) == 2)
    copy_in, copy_out = rig.audit.of("db.session.copy")
    assert copy_in["direction"] == "in" and copy_in["rows"] == 20_000
    assert copy_in["outcome"] == "success" and copy_in["bytes"] > 20_000 * 4
    assert copy_out["direction"] == "out" and copy_out["rows"] == 1000
    assert copy_out["bytes"] == len(out.getvalue()) > 0
    # ...each after its COPY statement, in the session's order.
    events = [e for e in rig.audit.events if e.get("session_id") == copy_in["session_id"]]
    kinds = [e["type"] if e["type"] != "db.session.query" else e["query"][:4] for e in events]
    assert kinds.index("db.session.copy") == kinds.index("COPY") + 1
    # A COPY the server refuses mid-way (a row that is not an int): a failure with its bytes.
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"), conninfo, "-X", "-c", "create temp table c2 (x int)",
        "-c", "copy c2 from stdin", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_b = await asyncio.wait_for(proc.communicate(b"7\nnot-a-number\n\\.\n"), 20)
    assert proc.returncode != 0 and b"invalid input syntax" in err_b
    await _until(lambda: len(rig.audit.of("db.session.copy")) == 3)
    failed = rig.audit.of("db.session.copy")[-1]
    assert failed["outcome"] == "failure" and failed["direction"] == "in"
    assert failed["rows"] is None and failed["bytes"] >= len(b"7\nnot-a-number\n")
    await _until(
        lambda: any(
            e["query"] == "select count(*) from c where x >= $1"
            and e["parameters"] == ["\\x00000000"]
            for e in rig.audit.of("db.session.query")
        )
    )
    assert any(e["query"].startswith("COPY") for e in rig.audit.of("db.session.query"))
    # asyncpg binds an int4 in binary: audited as hex (text-format values as text).
    await _until(
        lambda: any(
            e["query"] == "select x from t where x = $1" and e["parameters"] == ["\\x00000002"]
            for e in rig.audit.of("db.session.query")
            if e["protocol"] == "extended"
        )
    )

    # Denied: a db user no role allows: one clean 28000 line, the reason in audit.
    denied = await rig.login("admin_db", "admin")
    code, out, err = await _psql(denied, "select 1")
    assert code != 0
    assert 'access to database "pg1" as db user "admin_db"' in err and "denied" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    refusal = rig.audit.of("db.session.start")[-1]
    assert refusal["outcome"] == "failure" and "admin_db" in refusal["reason"]

    # Locked: a live psql session is cut within a second, with the lock's message.
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"),
        conninfo,
        "-X",
        "-Atc",
        "select pg_sleep(30)",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await _until(lambda: rig.audit.of("db.session.query")[-1]["query"] == "select pg_sleep(30)")
    lock = Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(user="alice"), message="laptop stolen"),
    )
    rig.locks.put(lock)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await rig.locks.enforce([lock])
    _, err_b = await asyncio.wait_for(proc.communicate(), 10)
    assert loop.time() - t0 < 2
    assert proc.returncode != 0 and "laptop stolen" in err_b.decode()
    # ...and a new session is refused while the lock holds.
    code, _, err = await _psql(conninfo, "select 1")
    assert code != 0 and "laptop stolen" in err


async def test_bsh_proxy_db_local_listener_relays_and_reports_failures(rig: DbRig) -> None:
    """bsh proxy db's PostgreSQL listener: a client without certificates (plaintext on the
    local hop, its SSLRequest answered N) reaches the database through the proxy with the
    user's certificate; a large result flows back whole; with the proxy unreachable the
    client gets one PostgreSQL error line naming it."""
    from bastion.cli.bsh_db import local_postgres_listener
    from bastion.client.tls import pem_context
    from bastion.protocols.alpn import ALPN_POSTGRES
    from bastion.testing.peers.ports import free_port

    await rig.login("alice_db", "local")
    ctx = pem_context(
        (rig.tmp / "local.ca").read_text(),
        (rig.tmp / "local.crt").read_text(),
        alpn=[ALPN_POSTGRES],
        key_file=rig.tmp / "local.key",
    )
    server = await local_postgres_listener(f"127.0.0.1:{rig.port}", ctx)
    port = server.sockets[0].getsockname()[1]
    dead = await local_postgres_listener(f"127.0.0.1:{free_port()}", ctx)
    dead_port = dead.sockets[0].getsockname()[1]
    try:
        local = f"host=127.0.0.1 port={port} user=alice_db dbname=postgres"
        code, out, err = await _psql(
            local + " sslmode=prefer", "select current_user; select repeat('x', 3000000)"
        )
        assert code == 0, err
        lines = out.split()
        assert lines[0] == "alice_db" and lines[1] == "x" * 3_000_000
        code, out, err = await _psql(
            f"host=127.0.0.1 port={dead_port} user=alice_db dbname=postgres", "select 1"
        )
        assert code != 0 and "bsh proxy db:" in err and "Traceback" not in err
    finally:
        server.close()
        dead.close()


async def test_large_object_function_calls_are_audited_by_name(rig: DbRig, tmp_path: Path) -> None:
    """psql's \\lo_import goes through libpq's fastpath (FunctionCall messages): each call is
    audited with the function's name, and the names match the server's own catalog."""
    conninfo = await rig.login("alice_db", "alice")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"bastion " * 512)
    code, out, err = await _psql(conninfo, f"\\lo_import {blob}")
    assert code == 0 and out.startswith("lo_import "), err
    await _until(lambda: bool(rig.audit.of("db.session.end")))
    calls = [e for e in rig.audit.of("db.session.query") if e["protocol"] == "function"]
    names = {e["query"] for e in calls}
    assert {"function call lo_open (oid 952)", "function call lowrite (oid 955)"} <= names
    assert "function call lo_close (oid 953)" in names
    written = [e for e in calls if e["query"].startswith("function call lowrite")]
    assert written[0]["parameters"][1].startswith("\\x62617374696f6e20")  # "bastion "
    oids = ",".join(map(str, LARGE_OBJECT_FUNCTIONS))
    catalog = psql_local(rig.pg, f"select oid, proname from pg_proc where oid in ({oids})")
    rows = dict(line.split("|") for line in catalog.split())
    assert {int(oid): name for oid, name in rows.items()} == LARGE_OBJECT_FUNCTIONS
