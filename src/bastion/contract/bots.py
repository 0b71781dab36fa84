"""Bots as resources (issue 18): ``bctl bots add/ls/rm``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply
from bastion.contract.core import Duration
from bastion.types.access import OIDCJoinSpec

__all__ = ["BOTS_ADD", "BOTS_LS", "BOTS_RM", "AddBot", "Bot", "BotAdded", "BotRemoved", "Bots"]

Name = Annotated[str, Field(min_length=1, max_length=64)]


class AddBot(Body):
    name: Name
    roles: list[str]
    logins: list[str] = []
    ttl: Duration = timedelta(hours=1)
    """How long the single-use join token is valid."""
    oidc: OIDCJoinSpec | None = None
    """Join with a CI platform's OIDC token instead of a secret."""
    bound_public_key: Annotated[str, Field(max_length=16384)] = ""
    """Join by signing a challenge with this OpenSSH public key's private key (each join)."""


class Bot(Reply):
    name: str
    user: str
    roles: list[str]
    logins: list[str]
    generation: int
    token: str
    """The name of its join token resource."""


class BotAdded(Reply):
    bot: Bot
    token: str
    """The join token secret, shown once (empty for join_method oidc)."""
    token_expires: str = ""
    join_method: str


class Bots(Reply):
    items: list[Bot]


class BotRemoved(Reply):
    deleted: str


BOTS_ADD = Endpoint(
    "POST",
    "/v1/bots",
    "user",
    "Create a bot (its user and join token, one audited change)",
    body=AddBot,
    response=BotAdded,
)
BOTS_LS = Endpoint("GET", "/v1/bots", "user", "List bots", body=Empty, response=Bots)
BOTS_RM = Endpoint(
    "DELETE",
    "/v1/bots/{name}",
    "user",
    "Delete a bot: its user (certificates revoked, sessions ended) and join tokens",
    body=Empty,
    response=BotRemoved,
)
