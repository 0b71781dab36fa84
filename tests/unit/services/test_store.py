import asyncio
from datetime import timedelta

import pytest

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AlreadyExists, CompareFailed, NotFound
from bastion.services.store import ResourceStore
from bastion.types import Metadata, Role


def store():
    clock = FakeClock()
    return clock, ResourceStore(MemoryBackend(clock), Role, "roles")


def role(name="dev"):
    return Role(metadata=Metadata(name=name))


async def test_crud_and_revisions():
    _, s = store()
    created = await s.create(role())
    assert created.metadata.revision
    with pytest.raises(AlreadyExists, match='role "dev" already exists'):
        await s.create(role())
    got = await s.get("dev")
    got.spec.allow.logins = ["root"]
    updated = await s.update(got)
    assert int(updated.metadata.revision) > int(created.metadata.revision)
    assert [r.name for r in await s.list()] == ["dev"]
    await s.delete("dev")
    with pytest.raises(NotFound, match='role "dev" not found'):
        await s.get("dev")


async def test_stale_update_refused():
    _, s = store()
    await s.create(role())
    a, b = await s.get("dev"), await s.get("dev")
    a.spec.allow.logins = ["a"]
    await s.update(a)
    b.spec.allow.logins = ["b"]
    with pytest.raises(CompareFailed):
        await s.update(b)


async def test_modify_retries_concurrent_changes():
    _, s = store()
    await s.create(role())

    def add(i):
        def change(r):
            r.spec.allow.logins = [*r.spec.allow.logins, f"u{i}"]
            return r

        return change

    await asyncio.gather(*(s.modify("dev", add(i)) for i in range(10)))
    assert len((await s.get("dev")).spec.allow.logins) == 10


async def test_expiry_from_metadata():
    clock, s = store()
    r = role()
    r.metadata.expires = clock.now() + timedelta(minutes=5)
    await s.create(r)
    clock.advance(timedelta(minutes=6))
    with pytest.raises(NotFound):
        await s.get("dev")


async def test_prefix_isolation():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    a = ResourceStore(backend, Role, "roles")
    b = ResourceStore(backend, Role, "roles2")
    await a.create(role("x"))
    assert await b.list() == []
