"""ResourceStore[T]: typed create/get/list/update/delete of one resource kind over a backend.

The backend revision becomes ``metadata.revision``; an update that carries a revision is
conditional on it, which is how ``bctl edit`` and concurrent admins avoid lost updates.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from pydantic import ValidationError

from bastion.backend.base import Backend, Item
from bastion.errors import AlreadyExists, BastionError, CompareFailed, NotFound
from bastion.types.meta import Resource

__all__ = ["ResourceStore"]

R = TypeVar("R", bound=Resource)


class ResourceStore(Generic[R]):
    """CRUD for one resource kind stored under ``prefix/<name>``."""

    def __init__(self, backend: Backend, model: type[R], prefix: str) -> None:
        self._backend = backend
        self._model = model
        self._prefix = prefix.rstrip("/") + "/"
        self.kind = model.KIND

    def key(self, name: str) -> str:
        return self._prefix + name

    def _label(self, name: str) -> str:
        return f'{self.kind} "{name}"'

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
        resource.metadata.revision = str(item.revision)
        return resource

    async def get(self, name: str) -> R:
        try:
            return self._decode(await self._backend.get(self.key(name)))
        except NotFound:
            raise NotFound(f"{self._label(name)} not found") from None

    async def list(self) -> list[R]:
        return [self._decode(item) for item in await self._backend.get_range(self._prefix)]

    async def create(self, resource: R) -> R:
        try:
            item = await self._backend.create(self._encode(resource))
        except AlreadyExists:
            raise AlreadyExists(
                f"{self._label(resource.name)} already exists (use --force to overwrite)"
            ) from None
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
