"""WatchedStore: lookups from memory, in step with this process's writes, never a guess."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import NotFound
from bastion.services.store import ResourceStore
from bastion.services.watched import WatchedStore
from bastion.types.access import Role, RoleSpec
from bastion.types.meta import Metadata


def _role(name: str, login: str = "ubuntu", expires: Any = None) -> Role:
    return Role(
        metadata=Metadata(name=name, expires=expires),
        spec=RoleSpec.model_validate({"allow": {"logins": [login]}}),
    )


class _Counting(MemoryBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gets = 0

    async def get(self, key: str) -> Any:
        self.gets += 1
        return await super().get(key)


async def _setup(queue_size: int = 1024) -> tuple[FakeClock, _Counting, ResourceStore[Role]]:
    clock = FakeClock()
    backend = _Counting(clock, sweep_interval=None, queue_size=queue_size)
    return clock, backend, ResourceStore(backend, Role, "roles")


async def test_lookups_come_from_memory_once_loaded_and_follow_every_write() -> None:
    clock, backend, store = await _setup()
    await store.create(_role("dev"))
    watched = WatchedStore(store, backend, clock)
    assert (await watched.get("dev")).name == "dev"  # not loaded yet: the store answers
    assert backend.gets == 1
    await watched.start()
    assert watched.ready
    await store.create(_role("ops"))
    await store.modify("dev", lambda r: r.model_copy(update={"spec": _role("x", "root").spec}))
    reads = backend.gets
    assert (await watched.get("ops")).name == "ops"  # written a moment ago: already there
    assert (await watched.get("dev")).spec.allow.logins == ["root"]
    await store.delete("ops")
    with pytest.raises(NotFound) as info:
        await watched.get("ops")  # deleted a moment ago: gone
    assert str(info.value) == str(store.not_found("ops"))
    assert backend.gets == reads  # none of the lookups read the backend
    await watched.close()


async def test_an_expired_resource_is_not_found() -> None:
    clock, backend, store = await _setup()
    await store.create(_role("temp", expires=clock.now() + timedelta(seconds=5)))
    watched = WatchedStore(store, backend, clock)
    await watched.start()
    assert (await watched.get("temp")).name == "temp"
    clock.advance(6)
    with pytest.raises(NotFound):
        await watched.get("temp")


async def test_a_broken_feed_falls_back_to_the_store_until_reloaded() -> None:
    clock, backend, store = await _setup(queue_size=2)
    watched = WatchedStore(store, backend, clock)
    await watched.start()
    for i in range(5):  # more changes than its watcher buffers between two lookups
        await store.create(_role(f"r{i}"))
    assert (await watched.get("r4")).name == "r4"  # from the store: the copy was dropped
    assert backend.gets == 1 and not watched.ready
    await watched.start()  # the lookup started the reload; this waits for it
    assert watched.ready
    assert (await watched.get("r3")).name == "r3"
    assert backend.gets == 1
    await watched.close()
    assert not watched.ready
