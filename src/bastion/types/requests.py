"""Just-in-time access: the access request resource and the role fields that govern it.

Layer: types (pure). A user asks for roles (``roles: [dba]``) or for specific resources
(``resources: [node/db7]``, granted through the ``search_as_roles`` of their roles); peers review
it; once approved the requester assumes it (a certificate naming the request id, whose TTL ends
no later than :attr:`AccessRequestSpec.access_expires`). The review state machine is the pure
:mod:`bastion.rbac.requests`; the service is :mod:`bastion.auth.requests`.

Role fields (under ``allow``/``deny``):

* ``request: {roles, search_as_roles, thresholds: [{approve, deny, filter}], max_duration,
  suggested_reviewers}``: what the holder may ask for, and how many reviews it takes;
* ``review_requests: {roles, where}``: which roles' requests the holder may review.

``filter`` and ``where`` are CEL expressions over ``reviewer`` (``name``, ``roles``, ``traits``)
and ``request`` (``user``, ``roles``, ``resources``, ``reason``), checked when the role is written.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from bastion.types.duration import Duration
from bastion.types.meta import Resource, StrictModel

__all__ = [
    "DEFAULT_MAX_DURATION",
    "MAX_ACCESS_DURATION",
    "PENDING_TTL",
    "REQUEST_STATES",
    "REQUESTABLE_KINDS",
    "AccessRequest",
    "AccessRequestSpec",
    "AccessReview",
    "RequestConditions",
    "RequestState",
    "ReviewConditions",
    "Threshold",
    "check_request_condition",
    "compile_request_condition",
    "parse_resource_id",
]

RequestState = Literal["PENDING", "APPROVED", "DENIED", "EXPIRED", "PROMOTED"]
REQUEST_STATES: tuple[RequestState, ...] = ("PENDING", "APPROVED", "DENIED", "EXPIRED", "PROMOTED")

PENDING_TTL = timedelta(hours=1)
"""How long a request waits for reviews (Teleport's ``PendingAccessDuration``)."""
DEFAULT_MAX_DURATION = timedelta(hours=1)
"""Access lifetime when no role of the requester sets ``request.max_duration``."""
MAX_ACCESS_DURATION = timedelta(hours=12)
"""The longest access any request grants (the longest certificate)."""

REQUESTABLE_KINDS = ("node", "db", "app")
"""Resource kinds a resource-based request may name (``node/NAME``, ``db/NAME``, ``app/NAME``)."""

_CONDITION_VARS = {
    "reviewer": {"name": "string", "roles": "list", "traits": "map"},
    "request": {"user": "string", "roles": "list", "resources": "list", "reason": "string"},
}
_IDENT = re.compile(r"(?<![\w.\"'])([A-Za-z_]\w*)(\s*\.\s*([A-Za-z_]\w*))?")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_ALLOWED_BARE = {"true", "false", "null", "in", "size", "has", "contains", "exists", "all"}


def parse_resource_id(value: str) -> tuple[str, str]:
    """``node/db7`` -> ``("node", "db7")``.

    Raises:
        ValueError: not ``KIND/NAME`` or a kind that cannot be requested.
    """
    kind, sep, name = value.partition("/")
    if not sep or not name or "/" in name:
        raise ValueError(f"resource {value!r}: use KIND/NAME, e.g. node/db7")
    if kind not in REQUESTABLE_KINDS:
        raise ValueError(
            f"resource {value!r}: only {', '.join(REQUESTABLE_KINDS)} can be requested"
        )
    return kind, name


def _probe() -> dict[str, Any]:
    return {
        "reviewer": {"name": "probe", "roles": ["probe"], "traits": {}},
        "request": {"user": "probe", "roles": ["probe"], "resources": [], "reason": ""},
    }


@lru_cache(maxsize=1024)
def compile_request_condition(text: str) -> Any:
    """Check and compile a ``filter``/``where`` expression once (cached by text).

    Raises:
        ValueError: too long, malformed, an unknown variable or field, or not a boolean.
    """
    if len(text) > 1000:
        raise ValueError("condition is longer than 1000 characters")
    try:
        import cel  # on first use: the package imports its CLI (~0.2 s)

        program = cel.compile(text)
    except Exception as exc:  # noqa: BLE001 - the engine raises ValueError or RuntimeError
        raise ValueError(f"syntax error: {str(exc).strip().splitlines()[0][:200]}") from None
    code = _STRING.sub('""', text)
    for match in _IDENT.finditer(code):
        name, field = match.group(1), match.group(3)
        if name in _CONDITION_VARS:
            if field and field not in _CONDITION_VARS[name]:
                raise ValueError(
                    f"unknown field {name}.{field}: {name} has {', '.join(_CONDITION_VARS[name])}"
                )
        elif name not in _ALLOWED_BARE and not code[match.end() :].lstrip().startswith("("):
            raise ValueError(f"unknown variable {name!r}: use reviewer or request")
    try:
        result = program.execute(_probe())
    except Exception as exc:  # noqa: BLE001 - type errors and friends
        if "key" not in str(exc).lower():
            raise ValueError(f"invalid condition: {str(exc).splitlines()[0][:200]}") from None
        result = False
    if not isinstance(result, bool):
        raise ValueError("a condition must be true or false")
    return program


def check_request_condition(text: str) -> str:
    """Pydantic validator helper: ``text`` unchanged, or ValueError."""
    if text:
        compile_request_condition(text)
    return text


class Threshold(StrictModel):
    """How many matching reviews approve or deny (Teleport's access review thresholds)."""

    name: str = ""
    approve: int = Field(default=1, ge=1, le=100)
    deny: int = Field(default=1, ge=1, le=100)
    filter: str = ""
    """CEL over ``reviewer`` and ``request``: only reviews whose author matches count. Empty:
    every allowed reviewer counts."""

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: str) -> str:
        return check_request_condition(value)


class RequestConditions(StrictModel):
    """``allow.request`` / ``deny.request`` of a role."""

    roles: list[str] = Field(default_factory=list)
    """Roles the holder may request (``*`` for any; on the deny side: never)."""
    search_as_roles: list[str] = Field(default_factory=list)
    """Roles whose resources the holder may find and request one by one (``node/db7``)."""
    thresholds: list[Threshold] = Field(default_factory=list)
    """Review thresholds for requests of these roles. Empty: one approval, one denial."""
    max_duration: Duration | None = None
    """Longest access a request of these roles grants (at most 12h; default 1h)."""
    suggested_reviewers: list[str] = Field(default_factory=list)

    @field_validator("max_duration")
    @classmethod
    def _check_max(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(minutes=1) <= value <= MAX_ACCESS_DURATION:
            raise ValueError("max_duration must be between 1m and 12h")
        return value


class ReviewConditions(StrictModel):
    """``allow.review_requests`` / ``deny.review_requests`` of a role."""

    roles: list[str] = Field(default_factory=list)
    """Roles whose requests the holder may review (``*`` for any)."""
    where: str = ""
    """CEL over ``reviewer`` and ``request``; the right applies only when it holds."""

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: str) -> str:
        return check_request_condition(value)


class AccessReview(StrictModel):
    author: str
    verdict: Literal["approve", "deny"]
    reason: str = ""
    created: datetime
    author_roles: list[str] = Field(default_factory=list)
    """The author's roles when reviewing (threshold filters read them)."""
    automatic: bool = False
    """Given by a rule of the cluster, not a person."""


class AccessRequestSpec(StrictModel):
    user: str
    roles: list[str] = Field(default_factory=list)
    """Roles granted on approval (for a resource request: the search_as roles that reach it)."""
    resources: list[str] = Field(default_factory=list)
    """``KIND/NAME`` ids: when set, the certificate reaches exactly these resources."""
    reason: str = ""
    state: RequestState = "PENDING"
    created: datetime
    pending_expires: datetime
    """A request still pending then has expired."""
    access_expires: datetime
    """Access granted by this request ends then (certificates never outlive it)."""
    thresholds: list[Threshold] = Field(default_factory=list)
    """Snapshot at creation: every threshold that applies."""
    role_thresholds: dict[str, list[int]] = Field(default_factory=dict)
    """Per requested role, indexes into ``thresholds``: the role is approved when one of them
    is met; the request when every role is."""
    suggested_reviewers: list[str] = Field(default_factory=list)
    reviews: list[AccessReview] = Field(default_factory=list)
    resolve_reason: str = ""
    resolved: datetime | None = None

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_resource_id(item)
        return value


class AccessRequest(Resource):
    KIND: ClassVar[str] = "access_request"
    kind: str = "access_request"
    spec: AccessRequestSpec

    def state_at(self, now: datetime) -> RequestState:
        """The state as of ``now``: a pending request past ``pending_expires`` or an approved
        one past ``access_expires`` has expired (stored state is not rewritten for that)."""
        state = self.spec.state
        if state == "PENDING" and now >= self.spec.pending_expires:
            return "EXPIRED"
        if state == "APPROVED" and now >= self.spec.access_expires:
            return "EXPIRED"
        return state
