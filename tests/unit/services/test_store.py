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


async def test_decoded_revision_is_set_like_an_assignment():
    _, s = store()
    created = await s.create(role())
    got = await s.get("dev")
    assert got.metadata.revision == created.metadata.revision
    assert "revision" in got.metadata.model_fields_set
    assert got.model_dump()["metadata"]["revision"] == created.metadata.revision


async def test_shared_listing_reuses_decodes_until_a_write_from_any_process():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    mine = ResourceStore(backend, Role, "roles")
    other = ResourceStore(backend, Role, "roles")  # another auth server on the same database
    await mine.create(role("a"))
    await mine.create(role("b"))
    first = await mine.list_shared()
    again = await mine.list_shared()
    assert [r.name for r in first] == ["a", "b"]
    assert all(x is y for x, y in zip(first, again, strict=True))
    changed = await other.get("a")
    changed.spec.allow.logins = ["root"]
    await other.update(changed)
    after = await mine.list_shared()
    assert after[0] is not first[0] and after[0].spec.allow.logins == ["root"]
    assert after[0].metadata.revision == (await other.get("a")).metadata.revision
    assert after[1] is first[1]
    await other.delete("b")
    assert [r.name for r in await mine.list_shared()] == ["a"]
    assert set(mine._shared) == {"roles/a"}


async def test_owned_listing_is_never_the_shared_objects():
    _, s = store()
    await s.create(role())
    shared = await s.list_shared()
    owned = await s.list()
    owned[0].spec.allow.logins = ["changed"]
    assert owned[0] is not shared[0]
    assert (await s.list_shared())[0].spec.allow.logins == []
    assert (await s.get("dev")) is not shared[0]
