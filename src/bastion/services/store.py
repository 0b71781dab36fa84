"""ResourceStore[T]: typed create/get/list/update/delete of one resource kind over a backend.

The backend revision becomes ``metadata.revision``; an update that carries a revision is
conditional on it, which is how ``bctl edit`` and concurrent admins avoid lost updates.

Changes that are audited are not written here directly: the op builders (:meth:`create_op`,
:meth:`put_op`, :meth:`update_op`, :meth:`delete_op`) return backend ops that the caller commits
together with the audit event (:meth:`bastion.audit.log.AuditLog.commit_change`); then
:meth:`written` turns the stored item back into the resource and :meth:`explain` turns a failed
condition into the same message the direct methods give. The key prefixes of every resource kind
whose state must have an event live here too (:data:`RESOURCE_PREFIXES`).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from pydantic import ValidationError

from bastion.backend.base import Backend, Create, Delete, Item, Put, Update
from bastion.errors import AlreadyExists, BastionError, CompareFailed, NotFound
from bastion.types.meta import Resource

__all__ = [
    "CONNECTORS_PREFIX",
    "HEARTBEAT_PREFIXES",
    "Lookup",
    "RESOURCE_PREFIXES",
    "ResourceStore",
    "audited_prefixes",
]

RESOURCE_PREFIXES: dict[str, str] = {
    "user": "users",
    "role": "roles",
    "token": "tokens",
    "cert_authority": "authorities",
    "node": "nodes",
    "proxy": "proxies",
    "db": "databases",
    "app": "apps",
    "lock": "locks",
    "cluster_auth_preference": "cluster_config",
    "device": "devices",
    "access_request": "access_requests",
    "scim_user": "scim/users",
    "scim_group": "scim/groups",
    "scim_token": "scim/tokens",
    "trusted_cluster": "trust/trusted_clusters",
    "remote_cluster": "trust/remote_clusters",
    "risk_rule": "risk/rules",
}
"""Backend key prefix of each stored resource kind (SSO connectors: :data:`CONNECTORS_PREFIX`)."""
CONNECTORS_PREFIX = "connectors"
"""SSO connectors live under ``connectors/<kind>/<name>``."""
HEARTBEAT_PREFIXES: tuple[str, ...] = ("nodes/", "proxies/", "databases/", "apps/")
"""Under these prefixes an item with an expiry is a heartbeat record written by an agent, not an
audited change (an admin-created node has no expiry and is audited)."""


def audited_prefixes() -> tuple[str, ...]:
    """Every prefix whose stored items must each match the event of their latest write."""
    return (*(p + "/" for p in RESOURCE_PREFIXES.values()), CONNECTORS_PREFIX + "/")


R = TypeVar("R", bound=Resource)


R_co = TypeVar("R_co", bound=Resource, covariant=True)


class Lookup(Protocol[R_co]):
    """A resource by name: a :class:`ResourceStore`, or its watched copy
    (:class:`~bastion.services.watched.WatchedStore`)."""

    async def get(self, name: str) -> R_co: ...


class ResourceStore(Generic[R]):
    """CRUD for one resource kind stored under ``prefix/<name>``."""

    def __init__(self, backend: Backend, model: type[R], prefix: str) -> None:
        self._backend = backend
        self._model = model
        self._prefix = prefix.rstrip("/") + "/"
        self.kind = model.KIND
        self._shared: dict[str, tuple[int, bytes, R]] = {}
        """:meth:`list_shared`'s cache: key -> (revision, stored bytes, decoded resource)."""

    def key(self, name: str) -> str:
        return self._prefix + name

    @property
    def prefix(self) -> str:
        """The key prefix (with the trailing ``/``)."""
        return self._prefix

    # -- ops for a transaction (committed by the caller with its audit event) -----------------

    def create_op(self, resource: R) -> Create:
        """Create ``resource`` (AlreadyExists when its name is taken)."""
        return Create(self._encode(resource))

    def put_op(self, resource: R) -> Put:
        """Create or overwrite ``resource``."""
        return Put(self._encode(resource))

    def update_op(self, resource: R) -> Update:
        """Replace an existing resource; conditional on ``metadata.revision`` when it is set."""
        revision = int(resource.metadata.revision) if resource.metadata.revision else None
        return Update(self._encode(resource), expected_revision=revision)

    def delete_op(self, name: str, revision: str | int | None = None) -> Delete:
        """Delete the resource ``name`` (at ``revision`` when given)."""
        return Delete(self.key(name), int(revision) if revision else None)

    def written(self, resource: R, item: Item | None) -> R:
        """``resource`` as stored by a committed op (with the new revision)."""
        if item is None:
            raise BastionError(f"no stored item for {self._label(resource.name)} (bug)")
        return self._decode_written(resource, item)

    def owns(self, key: str) -> bool:
        return key.startswith(self._prefix)

    def explain(self, exc: BastionError) -> BastionError:
        """The message this store gives for a failed condition on one of its keys (``exc``
        unchanged when the key is not this store's)."""
        if exc.key is None or not self.owns(exc.key):
            return exc
        label = self._label(exc.key[len(self._prefix) :])
        if isinstance(exc, AlreadyExists):
            return AlreadyExists(f"{label} already exists", key=exc.key)
        if isinstance(exc, NotFound):
            return NotFound(f"{label} not found", key=exc.key)
        if isinstance(exc, CompareFailed):
            return CompareFailed(
                f"{label} was changed by someone else since you read it; read it again and "
                "re-apply your change",
                key=exc.key,
            )
        return exc

    def _label(self, name: str) -> str:
        return f'{self.kind} "{name}"'

    def decode(self, item: Item) -> R:
        """The resource a stored ``item`` of this store holds (a change event's item)."""
        return self._decode(item)

    def not_found(self, name: str) -> NotFound:
        """The error :meth:`get` raises for a missing ``name``."""
        return NotFound(f"{self._label(name)} not found")

    def _encode(self, resource: R) -> Item:
        data = resource.model_dump(mode="json")
        data["metadata"].pop("revision", None)
        return Item(
            key=self.key(resource.metadata.name),
            value=json.dumps(data, separators=(",", ":")).encode(),
            expires=resource.metadata.expires,
        )

    def _decode(self, item: Item) -> R:
        try:
            resource = self._model.model_validate_json(item.value)
        except ValidationError as exc:
            raise BastionError(f"stored {self.kind} at {item.key} is corrupt: {exc}") from exc
        # The revision is a plain string the backend made: set it without validate_assignment
        # (which re-validates the field and costs a fifth of a decode on a listing).
        metadata = resource.metadata
        metadata.__dict__["revision"] = str(item.revision)
        metadata.__pydantic_fields_set__.add("revision")
        return resource

    def _decode_shared(self, item: Item) -> R:
        """The decoded ``item`` from :attr:`_shared` when the very same bytes at the very same
        revision were decoded before (both read in the query that returned ``item``, so another
        auth server's write is a new revision and a miss, never a stale hit)."""
        hit = self._shared.get(item.key)
        if hit is not None and hit[0] == item.revision and hit[1] == item.value:
            return hit[2]
        resource = self._decode(item)
        self._shared[item.key] = (item.revision, item.value, resource)
        return resource

    async def get(self, name: str) -> R:
        try:
            return self._decode(await self._backend.get(self.key(name)))
        except NotFound:
            raise NotFound(f"{self._label(name)} not found") from None

    async def list(self) -> list[R]:
        """Every stored resource, decoded for this caller (its to change)."""
        return [self._decode(item) for item in await self._backend.get_range(self._prefix)]

    async def list_shared(self) -> builtins.list[R]:
        """Every stored resource, **read-only**: the objects are shared with other readers and
        kept between calls, so a caller must copy (``model_copy``) before changing one.

        What :meth:`list` returns, without decoding what was decoded before: each listed item
        is served from a cache keyed by its key and checked against the revision and bytes
        read now (a write by any process, this one or another auth server on the same
        database, is a miss). Keys gone from the listing leave the cache. For the hot read
        paths (``bsh ls``, the web resources page with 10,000 nodes).
        """
        items = await self._backend.get_range(self._prefix)
        out = [self._decode_shared(item) for item in items]
        if len(self._shared) > len(items):  # deleted or expired since the last listing
            listed = {item.key for item in items}
            for key in [k for k in self._shared if k not in listed]:
                del self._shared[key]
        return out

    async def create(self, resource: R) -> R:
        try:
            item = await self._backend.create(self._encode(resource))
        except AlreadyExists:
            raise AlreadyExists(f"{self._label(resource.name)} already exists") from None
        return self._decode_written(resource, item)

    async def upsert(self, resource: R) -> R:
        item = await self._backend.put(self._encode(resource))
        return self._decode_written(resource, item)

    async def update(self, resource: R) -> R:
        """Replace an existing resource; conditional on ``metadata.revision`` when it is set."""
        revision = int(resource.metadata.revision) if resource.metadata.revision else None
        try:
            item = await self._backend.update(self._encode(resource), expected_revision=revision)
        except NotFound:
            raise NotFound(f"{self._label(resource.name)} not found") from None
        except CompareFailed:
            raise CompareFailed(
                f"{self._label(resource.name)} was changed by someone else since you read it; "
                "read it again and re-apply your change"
            ) from None
        return self._decode_written(resource, item)

    async def modify(self, name: str, change: Callable[[R], Awaitable[R] | R]) -> R:
        """Read-modify-write with retries on concurrent changes."""
        for _ in range(20):
            current = await self.get(name)
            result = change(current)
            updated = await result if isinstance(result, Awaitable) else result
            try:
                return await self.update(updated)
            except CompareFailed:
                continue
        raise CompareFailed(f"{self._label(name)} is changing too fast; try again")

    async def delete(self, name: str) -> None:
        try:
            await self._backend.delete(self.key(name))
        except NotFound:
            raise NotFound(f"{self._label(name)} not found") from None

    def _decode_written(self, resource: R, item: Item) -> R:
        out = resource.model_copy(deep=True)
        out.metadata.revision = str(item.revision)
        return out
