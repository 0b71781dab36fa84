"""Certificate renewal (issue 18): users, bots and hosts renew their own certificates.

``POST /v1/certs/renew`` is for any identity (``any``): the gate has checked its epoch and
locks; the handler renews exactly the presented identity, never widening
(:mod:`bastion.auth.renewal`). Bots join here too (``POST /v1/bots/join``, public: the token or
the OIDC JWT is the credential).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field

from bastion.contract.base import Body, Endpoint, Reply
from bastion.contract.core import Duration

__all__ = ["BOT_JOIN", "RENEW", "BotJoin", "Renew", "Renewed"]

Text = Annotated[str, Field(max_length=16384)]


class Renew(Body):
    public_key: Text
    """The key to certify: a new one (recommended: each renewal rotates the key) or the same."""
    ttl: Duration = timedelta(hours=1)
    """Requested lifetime; capped by the roles' max_session_ttl, a user's original login
    expiry, and 30 days for hosts."""


class Renewed(Reply):
    """The renewed certificates. ``kind`` says which fields are set: users and bots get
    ``ssh_cert`` (user certificate; empty without logins), hosts a host certificate."""

    kind: str
    user: str
    ssh_cert: str
    tls_cert: str
    ssh_user_ca: list[str] = []
    ssh_host_ca: list[str]
    tls_host_ca: str
    tls_user_ca: str
    expires: str
    roles: list[str] = []
    logins: list[str] = []
    cluster: str
    host_id: str = ""
    generation: int = 0
    """Bots: the generation of this certificate (auth keeps the newest one)."""


class BotJoin(Body):
    token: Text = ""
    """The single-use join token of ``bctl bots add`` (join_method token)."""
    bot: Annotated[str, Field(max_length=64)] = ""
    """With ``id_token``: the bot whose ``oidc`` join token resource checks the JWT."""
    id_token: Text = ""
    """An OIDC JWT from the CI platform (join_method oidc)."""
    public_key: Text
    ttl: Duration = timedelta(hours=1)


RENEW = Endpoint(
    "POST",
    "/v1/certs/renew",
    "any",
    "Renew the caller's own certificate (users within their login's expiry, bots, hosts); "
    "never widens",
    body=Renew,
    response=Renewed,
)
BOT_JOIN = Endpoint(
    "POST",
    "/v1/bots/join",
    "public",
    "A bot joins with its single-use token or an OIDC JWT: returns bot certificates",
    body=BotJoin,
    response=Renewed,
)
