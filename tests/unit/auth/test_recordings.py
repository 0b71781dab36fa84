from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.audit.canonical import decode
from bastion.audit.log import AuditQuery, event_key
from bastion.auth.guarded import GuardedAuth
from bastion.auth.recordings import (
    GuardedRecordings,
    InProcessTarget,
    RecordingService,
    find_session_end,
)
from bastion.backend.base import Item
from bastion.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    BastionError,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
)
from bastion.recording.store import LocalRecordingStore, RecordingMeta
from bastion.testing import AuthFixture, make_auth
from bastion.types import Identity

CAST = b'{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "hello"]\n'


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _meta(user: str = "alice", node: str = "web1", data: bytes = CAST) -> RecordingMeta:
    return RecordingMeta(
        session_id=str(uuid.uuid4()),
        user=user,
        login="root",
        node=node,
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def _ended(fx: AuthFixture, meta: RecordingMeta, sha: str | None = None) -> RecordingMeta:
    """The node's session.end event for ``meta`` (with its recording hash)."""
    await fx.auth.audit.emit(
        "session.end",
        user=meta.user,
        session_id=meta.session_id,
        target=meta.node,
        recording_sha256=meta.sha256 if sha is None else sha,
    )
    return meta


@pytest.fixture
async def fx(tmp_path: Path) -> AuthFixture:
    return await make_auth(recordings=LocalRecordingStore(tmp_path / "recs"))


async def _guard(fx: AuthFixture, user: str, roles: list[str], **kw: object) -> GuardedRecordings:
    ident = Identity(
        cluster="test.local",
        user=user,
        roles=tuple(roles),
        expires=fx.clock.now() + timedelta(hours=1),
        **kw,  # type: ignore[arg-type]
    )
    guard = await GuardedAuth.for_identity(fx.auth, fx.users, ident, "10.0.0.9")
    return GuardedRecordings(guard, RecordingService(fx.auth))


async def _node(fx: AuthFixture, name: str = "web1") -> GuardedRecordings:
    return await _guard(
        fx, "host-1", ["node"], kind="host", host_id="host-1", traits={"hostname": (name,)}
    )


async def test_upload_verifies_the_hash_and_is_idempotent(fx: AuthFixture) -> None:
    node = await _node(fx)
    meta = await _ended(fx, _meta())
    stored = await node.upload(meta, _chunks(CAST))
    assert stored.size == len(CAST) and stored.cluster == "test.local" and stored.uploaded
    again = await node.upload(meta, _chunks(CAST))  # a retry after a lost reply
    assert again.sha256 == meta.sha256
    other = CAST + b'[1.0, "o", "x"]\n'
    with pytest.raises(BadParameter, match="do not match"):
        await node.upload(meta, _chunks(other))  # bytes differ from the declared hash
    changed = meta.model_copy(update={"sha256": hashlib.sha256(other).hexdigest()})
    with pytest.raises(BadParameter, match="session.end"):
        await node.upload(changed, _chunks(other))  # not what session.end says
    with pytest.raises(AlreadyExists):  # and even without session.end: stored is immutable
        await node.upload(changed.model_copy(update={"complete": False}), _chunks(other))
    rejected = await fx.auth.audit.search(AuditQuery(types=("recording.rejected",)))
    assert rejected[-1].session_id == meta.session_id and rejected[-1].outcome == "failure"
    uploads = await fx.auth.audit.search(AuditQuery(types=("recording.upload",)))
    assert [e.session_id for e in uploads] == [meta.session_id]


async def test_upload_refuses_non_casts_oversize_and_missing_hash(fx: AuthFixture) -> None:
    node = await _node(fx)
    junk = b"not a recording\n"
    with pytest.raises(BadParameter, match="asciicast"):
        await node.upload(_meta(data=junk), _chunks(junk))
    with pytest.raises(BadParameter, match="sha256"):
        await node.upload(_meta().model_copy(update={"sha256": ""}), _chunks(CAST))
    fx.auth.deps = type(fx.auth.deps)(**{**_fields(fx), "recording_max_bytes": 10})
    small = await _node(fx)
    with pytest.raises(LimitExceeded):
        await small.upload(await _ended(fx, _meta()), _chunks(CAST))


def _fields(fx: AuthFixture) -> dict[str, object]:
    deps = fx.auth.deps
    return {name: getattr(deps, name) for name in deps.__dataclass_fields__}


async def test_only_nodes_upload_and_only_their_own_sessions(fx: AuthFixture) -> None:
    other = await _node(fx, "db1")
    with pytest.raises(AccessDenied, match="own sessions"):
        await other.upload(_meta(node="web1"), _chunks(CAST))
    user = await _guard(fx, "alice", ["access"])
    with pytest.raises(AccessDenied):
        await user.upload(_meta(), _chunks(CAST))


async def test_list_and_read_follow_rbac_and_are_audited(fx: AuthFixture) -> None:
    node = await _node(fx)
    mine, theirs = await _ended(fx, _meta("alice")), await _ended(fx, _meta("bob"))
    for m in (mine, theirs):
        await node.upload(m, _chunks(CAST))
    alice = await _guard(fx, "alice", ["access"])
    assert [m.session_id for m in await alice.list()] == [mine.session_id]
    got = await alice.get(mine.session_id, "view")
    assert got.data == CAST
    with pytest.raises(AccessDenied):
        await alice.get(theirs.session_id, "download")
    denied = await fx.auth.audit.search(AuditQuery(types=("access.denied",)))
    assert denied[-1].user == "alice" and denied[-1].target == "session"
    auditor = await _guard(fx, "audrey", ["auditor"])
    assert {m.session_id for m in await auditor.list()} == {mine.session_id, theirs.session_id}
    assert (await auditor.get(theirs.session_id, "download")).meta.user == "bob"
    with pytest.raises(NotFound):
        await auditor.get(str(uuid.uuid4()), "view")
    views = await fx.auth.audit.search(AuditQuery(types=("recording.*",)))
    kinds = [(e.type, e.user, e.fields.get("owner")) for e in views if e.type != "recording.upload"]
    assert kinds == [("recording.view", "alice", "alice"), ("recording.download", "audrey", "bob")]


async def test_in_process_target(fx: AuthFixture, tmp_path: Path) -> None:
    path = tmp_path / "x.cast"
    path.write_bytes(CAST)
    meta = await _ended(fx, _meta())
    await InProcessTarget(RecordingService(fx.auth)).upload(meta, path)
    assert await RecordingService(fx.auth).store.read(meta.session_id) == CAST
    stored = fx.auth.deps.recordings.directory / f"{meta.session_id}.cast"  # type: ignore[union-attr]
    assert stored.stat().st_ino != path.stat().st_ino  # a copy: the caller's file may change


async def test_service_needs_a_store() -> None:
    fx = await make_auth()
    with pytest.raises(BadParameter, match="not configured"):
        RecordingService(fx.auth)


async def test_a_complete_recording_must_match_its_session_end(fx: AuthFixture) -> None:
    node = await _node(fx)
    early = _meta()
    with pytest.raises(ConnectionProblem, match="not in the audit log yet"):
        await node.upload(early, _chunks(CAST))  # the node retries later
    await _ended(fx, early.model_copy(update={"node": "db1"}))  # another node's: not it
    with pytest.raises(ConnectionProblem):
        await node.upload(early, _chunks(CAST))
    await _ended(fx, early, sha="0" * 64)
    with pytest.raises(BadParameter, match="differs from the one in session.end"):
        await node.upload(early, _chunks(CAST))
    rejected = await fx.auth.audit.search(AuditQuery(types=("recording.rejected",)))
    assert rejected[-1].fields["session_end_sha256"] == "0" * 64
    # a recording recovered after a node crash has no session.end: stored on its own hash
    partial = _meta().model_copy(update={"complete": False})
    assert (await node.upload(partial, _chunks(CAST))).complete is False


async def test_session_end_is_found_behind_many_newer_events(fx: AuthFixture) -> None:
    meta = await _ended(fx, _meta())
    await fx.auth.audit.emit_many(
        [("user.login", "success", {"user": f"u{i}"}) for i in range(1200)]
    )
    end = await find_session_end(
        fx.auth.audit, meta.session_id, "web1", fx.clock.now() - timedelta(hours=1)
    )
    assert end is not None and end.fields["recording_sha256"] == meta.sha256
    assert await find_session_end(fx.auth.audit, meta.session_id, "db1", fx.clock.now()) is None


async def test_a_recording_modified_in_the_store_is_not_served(
    fx: AuthFixture, tmp_path: Path
) -> None:
    node = await _node(fx)
    meta = await _ended(fx, _meta())
    await node.upload(meta, _chunks(CAST))
    (tmp_path / "recs" / f"{meta.session_id}.cast").write_bytes(CAST.replace(b"hello", b"HELLO"))
    auditor = await _guard(fx, "audrey", ["auditor"])
    with pytest.raises(BastionError, match="modified or damaged"):
        await auditor.get(meta.session_id, "view")
    rejected = await fx.auth.audit.search(AuditQuery(types=("recording.rejected",)))
    assert rejected[-1].user == "audrey" and "modified" in rejected[-1].reason


async def test_a_db_session_end_matches_its_database(fx: AuthFixture) -> None:
    """The proxy's db route records database sessions: their end is ``db.session.end``."""
    meta = _meta(node="pg1").model_copy(update={"kind": "db"})
    await fx.auth.audit.emit(
        "db.session.end", user="alice", session_id=meta.session_id,
        recording_sha256=meta.sha256, db_service="pg1",
    )  # fmt: skip
    since = fx.clock.now() - timedelta(hours=1)
    end = await find_session_end(fx.auth.audit, meta.session_id, "pg1", since)
    assert end is not None and end.fields["recording_sha256"] == meta.sha256
    assert await find_session_end(fx.auth.audit, meta.session_id, "pg2", since) is None
    stored = await RecordingService(fx.auth).receive(meta, _chunks(CAST))
    assert stored.kind == "db" and stored.node == "pg1"


async def test_a_standalone_proxy_uploads_the_db_sessions_it_ended(fx: AuthFixture) -> None:
    """A proxy in its own process records database sessions (node = the database): it may
    upload one whose ``db.session.end`` it submitted itself, nothing else."""
    proxy = await _guard(fx, "proxy-1", ["proxy"], kind="host", host_id="proxy-1")
    meta = _meta(node="pg1").model_copy(update={"kind": "db"})
    await fx.auth.audit.emit(
        "db.session.end", user="alice", session_id=meta.session_id, db_service="pg1",
        recording_sha256=meta.sha256, emitted_by="proxy-1",
    )  # fmt: skip
    stored = await proxy.upload(meta, _chunks(CAST))
    assert stored.kind == "db" and stored.node == "pg1"
    other = _meta(node="pg1").model_copy(update={"kind": "db"})  # ended by another proxy
    await fx.auth.audit.emit(
        "db.session.end", user="alice", session_id=other.session_id, db_service="pg1",
        recording_sha256=other.sha256, emitted_by="proxy-2",
    )  # fmt: skip
    with pytest.raises(BadParameter, match="reported by another proxy"):
        await proxy.upload(other, _chunks(CAST))
    with pytest.raises(AccessDenied, match="own sessions"):  # SSH sessions: nodes only
        await proxy.upload(_meta(node="web1"), _chunks(CAST))


async def test_the_session_end_index_follows_the_log(
    fx: AuthFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookups read only what was appended since the previous one (forward), and older
    events backward from the first lookup's head, down to the lookback."""
    import bastion.auth.recordings as recordings

    monkeypatch.setattr(recordings, "SCAN_WINDOW", 8)
    since = fx.clock.now() - timedelta(hours=1)
    old = await _ended(fx, _meta())
    await fx.auth.audit.emit_many(
        [("db.session.query", "success", {"query": "select 'session.end'"})] * 30
    )
    first = await _ended(fx, _meta())
    assert (await find_session_end(fx.auth.audit, first.session_id, "web1", since)) is not None
    later = []
    for _ in range(3):  # appended after the first lookup: read forward
        await fx.auth.audit.emit_many([("user.login", "success", {"user": "u"})] * 20)
        later.append(await _ended(fx, _meta()))
    for meta in later:
        end = await find_session_end(fx.auth.audit, meta.session_id, "web1", since)
        assert end is not None and end.session_id == meta.session_id
    # before the first lookup's head: found by the backward scan
    end = await find_session_end(fx.auth.audit, old.session_id, "web1", since)
    assert end is not None and end.fields["recording_sha256"] == old.sha256
    # outside the lookback window: not found
    from bastion.clock import FakeClock

    assert isinstance(fx.clock, FakeClock)
    fx.clock.advance(timedelta(minutes=1))
    assert await find_session_end(fx.auth.audit, old.session_id, "web1", fx.clock.now()) is None
    assert await find_session_end(fx.auth.audit, str(uuid.uuid4()), "web1", since) is None


async def test_the_session_end_index_forgets_the_oldest(
    fx: AuthFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.auth.recordings as recordings

    monkeypatch.setattr(recordings, "MAX_INDEXED", 2)
    since = fx.clock.now() - timedelta(hours=1)
    await find_session_end(fx.auth.audit, str(uuid.uuid4()), "web1", since)  # the index starts
    metas = [await _ended(fx, _meta()) for _ in range(4)]
    assert await find_session_end(fx.auth.audit, metas[-1].session_id, "web1", since)
    assert await find_session_end(fx.auth.audit, metas[-2].session_id, "web1", since)
    assert await find_session_end(fx.auth.audit, metas[0].session_id, "web1", since) is None


async def test_in_process_target_checks_the_file(fx: AuthFixture, tmp_path: Path) -> None:
    path = tmp_path / "x.cast"
    path.write_bytes(CAST)
    service = RecordingService(fx.auth)
    meta = await _ended(fx, _meta(data=b"other bytes"))
    with pytest.raises(BadParameter, match="do not match"):
        await InProcessTarget(service).upload(meta, path)
    service.max_bytes = 10
    meta = await _ended(fx, _meta())
    with pytest.raises(LimitExceeded):
        await InProcessTarget(service).upload(meta, path)


def _spooled(fx: AuthFixture, tmp_path: Path) -> tuple[Path, InProcessTarget, list[str]]:
    """A spooled recording file, the in-process target and the list its removals go to."""
    path = tmp_path / "x.cast"
    path.write_bytes(CAST)
    return path, InProcessTarget(RecordingService(fx.auth)), []


async def test_a_spooled_recording_is_linked_checked_and_removed_in_one_hop(
    fx: AuthFixture, tmp_path: Path
) -> None:
    path, target, removed = _spooled(fx, tmp_path)
    meta = await _ended(fx, _meta())
    assert await target.upload_spooled(meta, path, lambda: removed.append("x")) is True
    stored = tmp_path / "recs" / f"{meta.session_id}.cast"
    assert removed == ["x"] and stored.stat().st_ino == path.stat().st_ino  # no copy
    got = await RecordingService(fx.auth).store.meta(meta.session_id)
    assert got.size == len(CAST) and got.sha256 == meta.sha256 and got.uploaded is not None
    [event] = await fx.auth.audit.search(AuditQuery(types=("recording.upload",)))
    assert event.session_id == meta.session_id and event.fields["size"] == len(CAST)
    # a retry of an upload whose reply was lost: accepted, the caller removes the spool files
    assert await target.upload_spooled(meta, path, lambda: removed.append("again")) is False
    assert removed == ["x"]


async def test_a_spooled_recording_is_refused_like_an_upload(
    fx: AuthFixture, tmp_path: Path
) -> None:
    path, target, removed = _spooled(fx, tmp_path)
    early = _meta()
    with pytest.raises(ConnectionProblem, match="not in the audit log yet"):
        await target.upload_spooled(early, path, lambda: removed.append("x"))
    wrong = await _ended(fx, _meta(data=b"other bytes"))
    with pytest.raises(BadParameter, match="do not match"):
        await target.upload_spooled(wrong, path, lambda: removed.append("x"))
    [rejected] = await fx.auth.audit.search(AuditQuery(types=("recording.rejected",)))
    assert rejected.fields["received_sha256"] == hashlib.sha256(CAST).hexdigest()
    lied = await _ended(fx, _meta(), sha="0" * 64)
    with pytest.raises(BadParameter, match="differs"):
        await target.upload_spooled(lied, path, lambda: removed.append("x"))
    assert removed == [] and path.exists()
    assert await RecordingService(fx.auth).store.list() == []


async def test_a_held_recording_is_checked_and_stored_from_memory(fx: AuthFixture) -> None:
    target = InProcessTarget(RecordingService(fx.auth))
    early = _meta()
    with pytest.raises(ConnectionProblem, match="not in the audit log yet"):
        await target.upload_bytes(early, CAST)
    wrong = await _ended(fx, _meta(data=b"other bytes"))
    with pytest.raises(BadParameter, match="do not match"):
        await target.upload_bytes(wrong, CAST)
    assert await RecordingService(fx.auth).store.list() == []
    meta = await _ended(fx, _meta())
    await target.upload_bytes(meta, CAST)
    service = RecordingService(fx.auth)
    got = await service.store.meta(meta.session_id)
    assert got.size == len(CAST) and got.sha256 == meta.sha256 and got.uploaded is not None
    assert await service.store.read(meta.session_id) == CAST
    [event] = await fx.auth.audit.search(AuditQuery(types=("recording.upload",)))
    assert event.session_id == meta.session_id and event.fields["size"] == len(CAST)
    await target.upload_bytes(meta, CAST)  # a retry whose reply was lost: accepted
    service.max_bytes = 10
    with pytest.raises(LimitExceeded):
        await InProcessTarget(service).upload_bytes(await _ended(fx, _meta()), CAST)


async def test_the_lookup_after_a_session_end_reads_little(
    fx: AuthFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup reads the block of 10 indexes holding the head (one backend read); past a
    full block, what was appended is filtered where it is stored and only session ends cross
    (not the events around them); a session end just read forward is not read a second
    time."""
    audit = fx.auth.audit
    since = fx.clock.now() - timedelta(hours=1)
    await find_session_end(audit, str(uuid.uuid4()), "web1", since)  # the index starts
    reads: list[bytes | None] = []
    moved: list[Item] = []
    real = audit.backend.get_range

    async def counted(
        prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        reads.append(containing)
        got = await real(prefix, limit, containing=containing)
        moved.extend(got)
        return got

    monkeypatch.setattr(audit.backend, "get_range", counted)
    for _ in range(12):
        meta = await _ended(fx, _meta())
        reads.clear()
        end = await find_session_end(audit, meta.session_id, "web1", since)
        assert end is not None and end.fields["recording_sha256"] == meta.sha256
        assert 1 <= len(reads) <= 2  # the block with the head (and the one after)
    await audit.emit_many([("user.login", "success", {"user": "u"})] * 250)
    later = await _ended(fx, _meta())
    reads.clear()
    moved.clear()
    assert await find_session_end(audit, later.session_id, "web1", since) is not None
    assert len(reads) <= 7  # blocks of 10, then filtered blocks of 100
    others = [i for i in moved if decode(i.value).type != "session.end"]
    assert 0 < len(others) <= 30  # the plain blocks': none of the 250 beyond them crossed


async def test_the_lookup_reads_past_a_missing_event(fx: AuthFixture) -> None:
    """A hole in the log (a deleted event) stops the fast forward read; a session end past it
    is found all the same (the thorough read goes on past holes)."""
    audit = fx.auth.audit
    since = fx.clock.now() - timedelta(hours=1)
    await find_session_end(audit, str(uuid.uuid4()), "web1", since)  # the index starts
    await audit.emit_many([("user.login", "success", {"user": "u"})] * 25)
    size = await audit.size()
    await audit.backend.delete(event_key(size - 1 - (size - 1) % 10 - 1))  # ends a block
    meta = await _ended(fx, _meta())
    end = await find_session_end(audit, meta.session_id, "web1", since)
    assert end is not None and end.session_id == meta.session_id


async def test_a_thorough_refresh_never_steps_over_a_batch_being_stored() -> None:
    """The session-end index reads on from its head; a batch that lands between two of its
    backend reads (a session end inside) is indexed by the next refresh, never skipped."""
    from bastion.audit.log import AuditLog
    from bastion.auth.recordings import _EndIndex
    from bastion.backend.memory import MemoryBackend
    from bastion.clock import FakeClock

    clock = FakeClock()
    backend = MemoryBackend(clock)
    log, other = AuditLog(backend, clock, "c1"), AuditLog(backend, clock, "c1")
    await log.emit_many([("exec", "success", {"n": n}) for n in range(20)])
    index = _EndIndex()
    await index.refresh(log)
    assert index.hi == 20
    batch = [("exec", "success", {"n": n}) for n in range(20, 32)]
    batch += [("session.end", "success", {"session_id": "s-1", "target": "node1"})]
    batch += [("exec", "success", {"n": n}) for n in range(33, 41)]
    real_get_range = backend.get_range
    reads = 0

    async def racing_get_range(
        prefix: str, limit: int | None = None, *, containing: bytes | None = None
    ) -> list[Item]:
        nonlocal reads
        found = await real_get_range(prefix, limit, containing=containing)
        reads += 1
        if reads == 1:  # right after the thorough refresh's first read
            await other.emit_many(batch)
        return found

    backend.get_range = racing_get_range  # type: ignore[method-assign]
    await index.refresh(log, thorough=True)
    backend.get_range = real_get_range  # type: ignore[method-assign]
    await index.refresh(log)
    assert index.ends.get("s-1") == [32] and index.hi == 41
