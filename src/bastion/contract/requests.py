"""Access requests (issue 17): create, list, show, review, drop, assume.

Every route is for people (``user``; the local admin identity also passes the gate as a user
kind of its own). What each caller may see and do is decided in
:class:`bastion.auth.requests.GuardedRequests`: the requester sees and drops their own
requests, reviewers see the requests they may review, admins (rule ``access_request``) all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply
from bastion.contract.core import DeviceBound, Duration, UserCerts

__all__ = [
    "ASSUME_REQUEST",
    "CREATE_REQUEST",
    "DROP_REQUEST",
    "GET_REQUEST",
    "LIST_REQUESTS",
    "REQUESTABLE",
    "REVIEW_REQUEST",
    "AccessRequestReply",
    "AccessRequests",
    "Assume",
    "ListQuery",
    "NewAccessRequest",
    "Review",
    "ReviewReply",
    "Requestable",
]

Reason = Annotated[str, Field(max_length=1024)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class NewAccessRequest(Body):
    roles: list[Name] = []
    resources: list[Name] = []
    """``KIND/NAME`` ids (``node/db7``): the certificate will reach exactly these."""
    reason: Reason = ""
    duration: Duration | None = None
    """Access lifetime asked for; capped by the roles' ``request.max_duration`` (default 1h)."""


class ReviewReply(Reply):
    author: str
    verdict: str
    reason: str = ""
    created: str
    automatic: bool = False


class AccessRequestReply(Reply):
    id: str
    user: str
    roles: list[str]
    resources: list[str] = []
    reason: str = ""
    state: str
    created: str
    pending_expires: str
    access_expires: str
    reviews: list[ReviewReply] = []
    approvals_needed: dict[str, int] = {}
    """Per requested role: the fewest approvals one of its thresholds needs."""
    suggested_reviewers: list[str] = []
    resolve_reason: str = ""


class AccessRequests(Reply):
    items: list[AccessRequestReply]


class ListQuery(Body):
    state: Literal["", "pending", "approved", "denied", "expired", "promoted"] = ""


class Review(Body):
    verdict: Literal["approve", "deny"]
    reason: Reason = ""


class Requestable(Reply):
    resource: str
    roles: list[str]
    """The caller's ``search_as_roles`` that reach the resource (granted on approval)."""


class Assume(DeviceBound):
    """The request's certificates for ``public_key``; on an enrolled machine the device
    ceremony and, with ``--key-store=tpm``, the TPM-held key's certification (as at login), so
    ``require_hardware_key`` holds for the assumed certificates too."""

    public_key: Annotated[str, Field(min_length=1, max_length=16384)]
    ttl: Duration = timedelta(hours=12)
    """Capped by the request's access expiry, the caller's certificate and the roles."""


CREATE_REQUEST = Endpoint(
    "POST",
    "/v1/access-requests",
    "user",
    "Ask for roles or specific resources (node/NAME) for a while, with a reason",
    body=NewAccessRequest,
    response=AccessRequestReply,
    status=201,
)
LIST_REQUESTS = Endpoint(
    "GET",
    "/v1/access-requests",
    "user",
    "Access requests the caller made, may review, or (admins) all",
    body=Empty,
    response=AccessRequests,
    query=ListQuery,
)
GET_REQUEST = Endpoint(
    "GET",
    "/v1/access-requests/{id}",
    "user",
    "One access request with its reviews",
    body=Empty,
    response=AccessRequestReply,
)
REVIEW_REQUEST = Endpoint(
    "POST",
    "/v1/access-requests/{id}/reviews",
    "user",
    "Approve or deny (thresholds decide; deny wins; never one's own request). Admins with "
    "rule access_request:update resolve outright",
    body=Review,
    response=AccessRequestReply,
)
DROP_REQUEST = Endpoint(
    "DELETE",
    "/v1/access-requests/{id}",
    "user",
    "Drop a request (the requester, or an admin)",
    body=Empty,
    response=Empty,
)
ASSUME_REQUEST = Endpoint(
    "POST",
    "/v1/access-requests/{id}/assume",
    "user",
    "Certificates carrying an approved request of the caller (TTL within its access expiry)",
    body=Assume,
    response=UserCerts,
)
REQUESTABLE = Endpoint(
    "GET",
    "/v1/requestable/{kind}/{name}",
    "user",
    "Whether the caller may request one resource (node/NAME) through search_as_roles: the roles "
    "that reach it, or 404 (also when it exists but is out of reach)",
    body=Empty,
    response=Requestable,
)
