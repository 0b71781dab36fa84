"""The audit log's gapless index when several OS processes append to one shared backend (an
SQLite file, a PostgreSQL database): every index 0..n-1 is held by exactly one event, and each
writer's own events are in its emit order."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bastion.audit.log import AuditLog
from bastion.backend import Backend
from bastion.backend.postgres import PostgresBackend
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.testing.peers.postgres import PgServer, create_database

WRITER = """
import asyncio, sys
from bastion.audit.log import AuditLog
from bastion.backend import open_backend
from bastion.clock import SystemClock

async def main(kind, where, name, count):
    kw = {"path": where} if kind == "sqlite" else {"dsn": where}
    backend = await open_backend(kind, **kw)
    log = AuditLog(backend, SystemClock(), "c1")
    try:
        for i in range(int(count)):
            await log.emit("exec", user=name, seq=i)
    finally:
        await backend.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def _writer(kind: str, where: str, name: str, count: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        kind,
        where,
        name,
        str(count),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()


async def _check_concurrent(kind: str, where: str, backend: Backend) -> None:
    count = 150
    await asyncio.gather(*(_writer(kind, where, name, count) for name in ("a", "b")))
    events = await AuditLog(backend, SystemClock(), "c1").read_from(0, 10_000)
    assert [e.index for e in events] == list(range(2 * count))
    for name in ("a", "b"):
        assert [e.fields["seq"] for e in events if e.user == name] == list(range(count))


async def test_two_processes_append_gaplessly_to_one_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "backend.sqlite")
    backend = await SQLiteBackend.open(path)
    try:
        await _check_concurrent("sqlite", path, backend)
    finally:
        await backend.close()


@pytest.mark.needs_postgres
async def test_two_processes_append_gaplessly_to_one_postgres_db(
    postgres_server: PgServer,
) -> None:
    dsn = await create_database(postgres_server)
    backend = await PostgresBackend.open(dsn)
    try:
        await _check_concurrent("postgres", dsn, backend)
    finally:
        await backend.close()


async def _check_create_batch(backend: Backend) -> None:
    from bastion.backend import Item
    from bastion.errors import AlreadyExists

    created = await backend.create_batch([Item("b/1", b"1"), Item("b/2", b"2")])  # type: ignore[attr-defined]
    assert [i.revision for i in created] == sorted(i.revision for i in created)
    with pytest.raises(AlreadyExists):
        await backend.create_batch([Item("b/3", b"3"), Item("b/2", b"x")])  # type: ignore[attr-defined]
    assert [i.key for i in await backend.get_range("b/")] == ["b/1", "b/2"]  # all or none
    log = AuditLog(backend, SystemClock(), "c1")
    many = await log.emit_many([("exec", "success", {"n": i}) for i in range(700)])
    assert [e.index for e in many] == list(range(700))


async def test_create_batch_is_all_or_nothing_on_sqlite(tmp_path: Path) -> None:
    backend = await SQLiteBackend.open(str(tmp_path / "b.sqlite"))
    try:
        await _check_create_batch(backend)
    finally:
        await backend.close()


@pytest.mark.needs_postgres
async def test_create_batch_is_all_or_nothing_on_postgres(postgres_server: PgServer) -> None:
    backend = await PostgresBackend.open(await create_database(postgres_server))
    try:
        await _check_create_batch(backend)
    finally:
        await backend.close()


async def _check_verify(backend: Backend) -> None:
    from bastion.audit.checkpointer import Checkpointer
    from bastion.audit.log import event_key
    from bastion.audit.signer import load_or_create_signer
    from bastion.audit.verify import verify_log

    clock = SystemClock()
    log = AuditLog(backend, clock, "c1")
    signer = await load_or_create_signer(backend, bytes(32), "c1", clock)
    events = await log.emit_many([("exec", "success", {"n": i}) for i in range(1200)])
    await Checkpointer(log, signer, clock).checkpoint()
    assert (await verify_log(log, signer.verifier())).ok
    await backend.delete(event_key(1100))
    report = await verify_log(log, signer.verifier())
    (finding,) = report.findings
    assert (finding.kind, finding.index, finding.event_id) == ("deleted", 1100, events[1100].id)


async def test_verify_on_sqlite(tmp_path: Path) -> None:
    backend = await SQLiteBackend.open(str(tmp_path / "v.sqlite"))
    try:
        await _check_verify(backend)
    finally:
        await backend.close()


@pytest.mark.needs_postgres
async def test_verify_on_postgres(postgres_server: PgServer) -> None:
    backend = await PostgresBackend.open(await create_database(postgres_server))
    try:
        await _check_verify(backend)
    finally:
        await backend.close()
