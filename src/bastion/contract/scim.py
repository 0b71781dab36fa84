"""SCIM 2.0 provisioning (RFC 7644) for identity providers, and its bearer tokens. docs/scim.md.

The ``/scim/v2`` endpoints are for the ``scim`` audience: no certificate, a connector's bearer
token (``bctl scim token --connector=NAME``). Their bodies and replies are SCIM JSON
(``application/scim+json``) that the handlers read and write themselves, with the SCIM error
schema for every failure, so they are declared with ``raw_body`` and a streamed content type.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, OpenReply, Reply

__all__ = [
    "SCIM_CONFIG",
    "SCIM_GROUPS",
    "SCIM_GROUP_CREATE",
    "SCIM_GROUP_DELETE",
    "SCIM_GROUP_GET",
    "SCIM_GROUP_PATCH",
    "SCIM_GROUP_REPLACE",
    "SCIM_MEDIA_TYPE",
    "SCIM_TOKEN",
    "SCIM_USERS",
    "SCIM_USER_CREATE",
    "SCIM_USER_DELETE",
    "SCIM_USER_GET",
    "SCIM_USER_PATCH",
    "SCIM_USER_REPLACE",
    "NewScimToken",
    "ScimDocument",
    "ScimTokenReply",
]

SCIM_MEDIA_TYPE = "application/scim+json"


class ScimDocument(OpenReply):
    """A SCIM resource, list or error (RFC 7643/7644)."""

    schemas: list[str] = Field(default_factory=list)


class NewScimToken(Body):
    connector: Annotated[str, Field(min_length=1, max_length=253)]


class ScimTokenReply(Reply):
    connector: str
    token: str
    """The bearer token, shown once (only its hash is stored)."""
    url: str
    """The SCIM base URL to configure in the identity provider."""


SCIM_TOKEN = Endpoint(
    "POST",
    "/v1/scim/tokens",
    "user",
    "Create or rotate an SSO connector's SCIM bearer token (needs update on the connector kind)",
    body=NewScimToken,
    response=ScimTokenReply,
    status=201,
)


def _scim(method: str, path: str, summary: str, status: int = 200) -> Endpoint[Empty, ScimDocument]:
    return Endpoint(
        method,  # type: ignore[arg-type]
        "/scim/v2" + path,
        "scim",
        summary,
        body=Empty,
        response=ScimDocument,
        status=status,
        stream=SCIM_MEDIA_TYPE,
        raw_body=method in ("POST", "PUT", "PATCH"),
        tags=("scim",),
    )


SCIM_CONFIG = _scim("GET", "/ServiceProviderConfig", "SCIM service provider configuration")
SCIM_USERS = _scim("GET", "/Users", "List or filter users (filter, startIndex, count)")
SCIM_USER_CREATE = _scim("POST", "/Users", "Provision a user", 201)
SCIM_USER_GET = _scim("GET", "/Users/{id}", "One user")
SCIM_USER_REPLACE = _scim("PUT", "/Users/{id}", "Replace a user (If-Match)")
SCIM_USER_PATCH = _scim("PATCH", "/Users/{id}", "Patch a user (active: false deprovisions)")
SCIM_USER_DELETE = _scim("DELETE", "/Users/{id}", "Deprovision and delete a user", 204)
SCIM_GROUPS = _scim("GET", "/Groups", "List or filter groups")
SCIM_GROUP_CREATE = _scim("POST", "/Groups", "Create a group", 201)
SCIM_GROUP_GET = _scim("GET", "/Groups/{id}", "One group")
SCIM_GROUP_REPLACE = _scim("PUT", "/Groups/{id}", "Replace a group (If-Match)")
SCIM_GROUP_PATCH = _scim("PATCH", "/Groups/{id}", "Add or remove members, rename")
SCIM_GROUP_DELETE = _scim("DELETE", "/Groups/{id}", "Delete a group", 204)
