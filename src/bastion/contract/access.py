"""Access explained (``bctl access``): what policy decides, and why. Each needs ``read`` on
``role`` and ``user`` (the answers reveal both)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, OpenReply, Reply

__all__ = ["ACCESS_CHECK", "ACCESS_LS", "ACCESS_WHO"]

Short = Field(min_length=1, max_length=256)


class CheckQuery(Body):
    user: str = Short
    node: str = Short
    login: str = Short
    at: str = ""
    """ISO 8601 (naive means UTC); empty: now."""
    source_ip: str = ""
    mfa: bool = False


class Decision(OpenReply):
    """The decision, each role's verdict, the locks that apply, whether MFA is required."""

    allowed: bool


class UserQuery(Body):
    user: str = Short
    at: str = ""


class TargetQuery(Body):
    node: str = Short
    login: str = Short
    at: str = ""


class Items(Reply):
    items: list[dict[str, Any]]


ACCESS_CHECK = Endpoint(
    "GET",
    "/v1/access/check",
    "user",
    "Whether a user may log in as a login on a node, and why",
    body=Empty,
    response=Decision,
    query=CheckQuery,
)
ACCESS_LS = Endpoint(
    "GET",
    "/v1/access/ls",
    "user",
    "Every (node, login) a user may reach",
    body=Empty,
    response=Items,
    query=UserQuery,
)
ACCESS_WHO = Endpoint(
    "GET",
    "/v1/access/who",
    "user",
    "Every user who may log in as a login on a node",
    body=Empty,
    response=Items,
    query=TargetQuery,
)
