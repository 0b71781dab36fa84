"""Stored resources against the events of their latest writes (verify's ``unaudited`` check)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from bastion.audit.log import PREFIX, AuditLog, index_of_key
from bastion.audit.signer import load_or_create_signer
from bastion.audit.state import LatestWrites, events_without_state, unaudited_state
from bastion.audit.verify import verify_log
from bastion.backend.base import Backend, Create, Delete, Item, Put, Update
from bastion.backend.memory import MemoryBackend
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import FakeClock

KEK = bytes(range(32))


async def _latest(backend: Backend) -> LatestWrites:
    latest = LatestWrites()
    for item in await backend.get_range(PREFIX):
        index = index_of_key(item.key)
        assert index is not None
        latest.feed(index, item.value)
    return latest


async def test_resources_written_with_their_events_pass() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    await log.commit_change("role.create", [Create(Item("roles/dev", b"v1"))], user="a")
    await log.commit_change("role.update", [Update(Item("roles/dev", b"v2"))], user="a")
    await log.commit_change("role.create", [Put(Item("roles/ops", b"o"))], user="a")
    await log.commit_change("role.delete", [Delete("roles/ops")], user="a")
    await log.emit("user.login", user="a")  # no changes: ignored
    latest = await _latest(backend)
    assert latest.by_key["roles/dev"].index == 1 and latest.by_key["roles/ops"].op == "delete"
    checked, findings = await unaudited_state(backend, latest)
    assert (checked, findings) == (1, [])
    assert await events_without_state(backend, latest) == []


async def test_every_kind_of_change_behind_the_logs_back_is_named() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    await log.commit_change("role.create", [Create(Item("roles/dev", b"v1"))], user="a")
    await log.commit_change("user.create", [Create(Item("users/bob", b"b"))], user="a")
    await log.commit_change("user.delete", [Delete("users/bob")], user="a")
    await backend.put(Item("roles/dev", b"edited"))  # changed
    await backend.put(Item("users/bob", b"back"))  # resurrected
    await backend.put(Item("users/mallory", b"{}"))  # never audited
    await backend.put(Item("connectors/oidc/corp", b"{}"))
    await backend.put(Item("nodes/hb", b"{}", expires=clock.now() + timedelta(minutes=5)))
    await backend.put(Item("nodes/static", b"{}"))  # admin-created node without expiry
    await backend.put(Item("credentials/x", b"{}"))  # not an audited prefix
    checked, findings = await unaudited_state(backend, await _latest(backend))
    assert checked == 5
    named = {f.key: f.message for f in findings}
    assert set(named) == {
        "roles/dev",
        "users/bob",
        "users/mallory",
        "connectors/oidc/corp",
        "nodes/static",
    }
    assert "changed behind the log's back" in named["roles/dev"]
    assert "deleted it" in named["users/bob"]
    assert "no audit event" in named["users/mallory"]
    assert all(f.kind == "unaudited" for f in findings)


async def test_events_without_state_names_the_other_direction() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    await log.commit_change("role.create", [Create(Item("roles/a", b"1"))], user="x")
    await log.commit_change("role.create", [Create(Item("roles/b", b"1"))], user="x")
    await log.commit_change("role.delete", [Delete("roles/b")], user="x")
    await backend.delete("roles/a")
    await backend.put(Item("roles/b", b"2"))
    problems = await events_without_state(backend, await _latest(backend))
    assert problems == [
        "roles/a: written by event 0, but not stored",
        "roles/b: deleted by event 2, but stored",
    ]


async def test_verify_names_a_role_inserted_into_the_sqlite_file(tmp_path) -> None:
    path = str(tmp_path / "backend.sqlite")
    clock = FakeClock()
    backend = await SQLiteBackend.open(path, clock)
    try:
        log = AuditLog(backend, clock, "c1")
        signer = await load_or_create_signer(backend, KEK, "c1", clock)
        await log.commit_change("role.create", [Create(Item("roles/dev", b"{}"))], user="a")
        report = await verify_log(log, signer.verifier())
        assert report.ok and report.resources == 1, report.findings
        with sqlite3.connect(path) as db:  # behind the log's back: straight into the file
            db.execute(
                "INSERT INTO kv (key, value, expires, revision) VALUES (?, ?, NULL, 999)",
                ("roles/backdoor", b'{"spec":{"allow":{"logins":["root"]}}}'),
            )
        report = await verify_log(log, signer.verifier())
        assert not report.ok
        (finding,) = report.findings
        assert finding.kind == "unaudited" and finding.key == "roles/backdoor"
        assert "roles/backdoor" in finding.message and "no audit event" in finding.message
        assert report.to_dict()["findings"][0]["key"] == "roles/backdoor"
    finally:
        await backend.close()
