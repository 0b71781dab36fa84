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
from bastion.contract.core import DeviceBound, Duration

__all__ = [
    "BOT_JOIN",
    "BOT_JOIN_CHALLENGE",
    "RENEW",
    "BotJoin",
    "Challenge",
    "ChallengeRequest",
    "Renew",
    "Renewed",
    "bound_keypair_message",
]

Text = Annotated[str, Field(max_length=16384)]


class Renew(DeviceBound):
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
    challenge: Text = ""
    """With ``signature``: a challenge of ``POST /v1/bots/join/challenge`` (bound_keypair)."""
    signature: Text = ""
    """Base64 signature by the bot's registered key over :func:`bound_keypair_message`."""
    public_key: Text
    ttl: Duration = timedelta(hours=1)


class ChallengeRequest(Body):
    bot: Annotated[str, Field(min_length=1, max_length=64)]


class Challenge(Reply):
    challenge: str
    """Opaque; valid for a minute, for this bot only."""
    expires: str


def bound_keypair_message(challenge: str, public_key: str) -> bytes:
    """What a bound_keypair bot signs: the challenge and the key it asks a certificate for
    (so a captured signature is worth nothing for another key)."""
    # The fixed prefix is signed bytes (a domain separator), not a message: never reword it.
    return b"bastion bound_keypair join\n" + f"{challenge}\n{public_key.strip()}\n".encode()


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
BOT_JOIN_CHALLENGE = Endpoint(
    "POST",
    "/v1/bots/join/challenge",
    "public",
    "A challenge for a bound_keypair bot to sign with its registered key before joining",
    body=ChallengeRequest,
    response=Challenge,
)
