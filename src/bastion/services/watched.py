"""One resource kind kept in memory from the backend's change feed, for hot lookups by name.

Layer: services. The auth process looks a user, a role or a database up on every API request
and every proxied connection (the gate's user record, the roles of a certificate, the database
a session asks for); each lookup was a backend read, a hop to the SQLite thread that cost
0.4 ms at the median while the event loop was busy and more behind an audit commit. A
:class:`WatchedStore` answers from memory instead:

* **loaded** from a listing taken after its watcher subscribed (a change between the two is
  in the listing, the feed, or both: applying it twice changes nothing);
* **in step with this process's writes**: a backend publishes a write's change before the
  write returns, and :meth:`WatchedStore.get` applies whatever is buffered before it answers,
  so a user deleted or reset here a moment ago is never served from the copy;
* **another process's writes** (HA auth servers on one database) arrive with the feed's delay,
  as they do for a proxy's watch-fed cache (the SQLite poll, PostgreSQL's notification);
* **never a guess**: until it is loaded, and from the moment its feed broke (fell behind,
  backend closed) until it is loaded again, lookups go to the store itself.

What :meth:`WatchedStore.get` returns is shared with other readers: read it, do not change it
(``model_copy`` first), as with :meth:`~bastion.services.store.ResourceStore.list_shared`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Generic, TypeVar

from bastion.backend.base import Backend, EventType, Watcher
from bastion.backend.fanout import FanoutWatcher
from bastion.clock import Clock
from bastion.errors import BastionError
from bastion.services.store import ResourceStore
from bastion.tasks import spawn
from bastion.types.meta import Resource

__all__ = ["WatchedStore"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)


class WatchedStore(Generic[R]):
    """The resources of ``store`` by name, from memory once :meth:`start` loaded them."""

    def __init__(self, store: ResourceStore[R], backend: Backend, clock: Clock) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self._items: dict[str, R] = {}
        self._watcher: FanoutWatcher | None = None
        self._loading: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def store(self) -> ResourceStore[R]:
        return self._store

    @property
    def ready(self) -> bool:
        """Whether lookups are answered from memory."""
        return self._watcher is not None

    async def start(self) -> None:
        """Load now (lookups before it read the store; the first one starts loading too)."""
        self._reload()
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _subscribe_and_list(self) -> None:
        """Subscribe, then list every resource (a backend whose watchers cannot be drained
        keeps reading the store)."""
        watcher: Watcher = await self._backend.watch([self._store.prefix])
        if not isinstance(watcher, FanoutWatcher):
            await watcher.close()
            return
        try:
            items = {r.name: r for r in await self._store.list()}
        except BaseException:
            await watcher.close()
            raise
        if self._closed:
            await watcher.close()
            return
        self._items = items
        self._watcher = watcher
        self._apply()

    async def get(self, name: str) -> R:
        """The resource ``name`` (read-only; expired: not found), from memory when loaded.

        Raises:
            NotFound: no such resource (the store's own message).
        """
        if self._watcher is None or not self._apply():
            self._reload()
            return await self._store.get(name)
        found = self._items.get(name)
        expires = found.metadata.expires if found is not None else None
        if found is None or (expires is not None and expires <= self._clock.now()):
            raise self._store.not_found(name)
        return found

    async def close(self) -> None:
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.close()
        if self._loading is not None:
            self._loading.cancel()

    def _apply(self) -> bool:
        """Apply the buffered changes; False when the feed broke (then the copy is dropped)."""
        watcher = self._watcher
        assert watcher is not None
        try:
            events = watcher.drain()
        except BastionError as exc:
            log.warning("%s cache: %s; reading the store until it is reloaded", self._kind, exc)
            self._watcher = None
            self._items = {}
            return False
        store, items = self._store, self._items
        prefix = len(store.prefix)
        for event in events:
            name = event.item.key[prefix:]
            if event.type is EventType.DELETE:
                items.pop(name, None)
                continue
            try:
                items[name] = store.decode(event.item)
            except BastionError as exc:  # a corrupt record: the store's read says so
                log.warning("%s cache: %s", self._kind, exc)
                items.pop(name, None)
        return True

    def _reload(self) -> None:
        """Start loading unless loaded, loading or closed."""
        if self._closed or self._watcher is not None:
            return
        if self._loading is not None and not self._loading.done():
            return
        self._loading = spawn(self._load(), f"watched-{self._kind}")

    async def _load(self) -> None:
        try:
            await self._subscribe_and_list()
        except BastionError as exc:
            log.warning("%s cache: cannot load: %s", self._kind, exc)
            await asyncio.sleep(1.0)  # the next lookup tries again after this

    @property
    def _kind(self) -> str:
        return str(self._store.kind)
