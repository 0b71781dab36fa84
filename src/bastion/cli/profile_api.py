"""One typed API call with the current ``bsh login`` profile (``bsh db``, ``bsh apps``).

Layer: ``cli``. The profile's login certificate authenticates to the proxy's API (mTLS, ALPN
``http/1.1``); refusals and errors arrive as the server's error classes.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from bastion.cli.identity import run_async
from bastion.client.api import AuthClient
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import check_profile
from bastion.client.tls import profile_context
from bastion.contract.base import Body, Endpoint
from bastion.errors import BadParameter
from bastion.protocols.alpn import ALPN_HTTP

__all__ = ["check_label_filters", "current_profile", "profile_send"]

B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


def current_profile() -> Profile:
    """The logged-in profile (a clear error when there is none or it expired)."""
    profile = ProfileStore().load(None)
    check_profile(profile)
    return profile


def check_label_filters(labels: tuple[str, ...]) -> None:
    """``k=v`` filters of ``ls`` commands.

    Raises:
        BadParameter: a filter without ``=``.
    """
    for item in labels:
        if "=" not in item:
            raise BadParameter(f"invalid label filter {item!r}: expected key=value")


def profile_send(
    profile: Profile,
    endpoint: Endpoint[B, R],
    body: B | None = None,
    *,
    path: dict[str, str] | None = None,
    query: Body | None = None,
) -> R:
    """:meth:`AuthClient.send` with ``profile``'s certificate, synchronously."""

    async def go() -> R:
        ctx = profile_context(profile.path, profile.name, [ALPN_HTTP])
        async with AuthClient(profile.proxy, ctx) as client:
            return await client.send(endpoint, body, path=path, query=query)

    result: R = run_async(go())
    return result
