"""Resources: list, read, create, replace and delete any kind (``bctl get/create/rm/apply``).

``{kind}`` is a kind or its alias (``roles``, ``ca``); writes are confined per identity by
GuardedAuth (a host writes only its own records).
"""

from __future__ import annotations

from bastion.contract.base import AnyResource, Body, Empty, Endpoint, Reply, ResourceDoc

__all__ = [
    "CREATE_RESOURCE",
    "DELETE_RESOURCE",
    "GET_RESOURCE",
    "LIST_RESOURCES",
    "UPDATE_RESOURCE",
    "Deleted",
    "ResourceList",
    "WriteQuery",
]


class ResourceList(Reply):
    items: list[AnyResource]
    online: dict[str, bool | None] | None = None
    """Nodes only: whether each node's agent holds a tunnel now (``bsh ls`` STATUS)."""


class WriteQuery(Body):
    force: bool = False
    """Overwrite without the revision check (PUT) or an existing resource (POST)."""


class Deleted(Reply):
    deleted: str


LIST_RESOURCES = Endpoint(
    "GET",
    "/v1/resources/{kind}",
    "any",
    "List the resources of a kind you may list",
    body=Empty,
    response=ResourceList,
)
GET_RESOURCE = Endpoint(
    "GET",
    "/v1/resources/{kind}/{name}",
    "any",
    "Read one resource",
    body=Empty,
    response=ResourceDoc,
)
CREATE_RESOURCE = Endpoint(
    "POST",
    "/v1/resources/{kind}",
    "any",
    "Create a resource (?force=true overwrites an existing one)",
    body=ResourceDoc,
    response=ResourceDoc,
    query=WriteQuery,
    status=201,
)
UPDATE_RESOURCE = Endpoint(
    "PUT",
    "/v1/resources/{kind}/{name}",
    "any",
    "Replace a resource: metadata.revision must match the stored one (or ?force=true)",
    body=ResourceDoc,
    response=ResourceDoc,
    query=WriteQuery,
)
DELETE_RESOURCE = Endpoint(
    "DELETE",
    "/v1/resources/{kind}/{name}",
    "any",
    "Delete a resource",
    body=Empty,
    response=Deleted,
)
