"""SCIM 2.0 resources (RFC 7643) as stored, and the SCIM error.

Layer: types (pure). A SCIM user (:class:`ScimUser`) is the provisioned record of one SSO
identity of a connector, named in certificates like an SSO login (``connector:userName``); a SCIM
group (:class:`ScimGroup`) is a set of those users whose ``displayName`` becomes a value of the
``groups`` claim that the connector's ``claims_to_roles`` maps to roles. Both are stored as
resources (``metadata.name`` is the SCIM ``id``; ``metadata.revision`` is the ETag) and scoped to
their connector: a connector's SCIM token sees only its own resources.

The wire documents and PATCH operations live in :mod:`bastion.protocols.scim`.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from bastion.errors import BastionError
from bastion.types.meta import Resource, StrictModel

__all__ = [
    "ERROR_SCHEMA",
    "GROUPS_CLAIM",
    "GROUP_SCHEMA",
    "LIST_SCHEMA",
    "PATCH_SCHEMA",
    "USER_SCHEMA",
    "ScimGroup",
    "ScimGroupSpec",
    "ScimProblem",
    "ScimToken",
    "ScimTokenSpec",
    "ScimUser",
    "ScimUserSpec",
]

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
GROUPS_CLAIM = "groups"
"""The claim (trait) SCIM groups feed: ``claims_to_roles: [{claim: groups, value: ...}]``."""


class ScimProblem(BastionError):
    """A SCIM error reply: HTTP ``status`` and ``scim_type`` (RFC 7644 section 3.12)."""

    code = "scim_error"
    http_status = 400

    def __init__(self, message: str, status: int = 400, scim_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type


class ScimUserSpec(StrictModel):
    connector: str
    user_name: str
    """``userName``: the SSO username (``connector:userName`` in certificates and locks)."""
    external_id: str = ""
    display_name: str = ""
    given_name: str = ""
    family_name: str = ""
    emails: list[str] = Field(default_factory=list)
    active: bool = True
    epoch: str = ""
    """The epoch the SSO certificates of this user carry; replaced (and the old one locked)
    when a group change takes a role away."""
    created: datetime | None = None
    last_modified: datetime | None = None


class ScimUser(Resource):
    KIND: ClassVar[str] = "scim_user"
    kind: str = "scim_user"
    spec: ScimUserSpec


class ScimGroupSpec(StrictModel):
    connector: str
    display_name: str
    external_id: str = ""
    members: list[str] = Field(default_factory=list)
    """SCIM ids of member users (of the same connector)."""
    created: datetime | None = None
    last_modified: datetime | None = None


class ScimGroup(Resource):
    KIND: ClassVar[str] = "scim_group"
    kind: str = "scim_group"
    spec: ScimGroupSpec


class ScimTokenSpec(StrictModel):
    token_sha256: str
    """SHA-256 hex of the bearer secret; the secret itself is shown once and never stored."""
    created_by: str = ""
    created: datetime | None = None


class ScimToken(Resource):
    """The bearer token of one connector's SCIM endpoint (``metadata.name`` is the connector)."""

    KIND: ClassVar[str] = "scim_token"
    kind: str = "scim_token"
    spec: ScimTokenSpec
