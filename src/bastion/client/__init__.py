"""Clients of the auth API: the typed HTTP client and the on-disk profiles of bsh and bctl.

The names load on first use (PEP 562): importing :mod:`bastion.client.profile` for ``bsh status``
must not pull in aiohttp through :class:`AuthClient`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.client.api import AuthClient
    from bastion.client.profile import Profile, ProfileStore

__all__ = ["AuthClient", "Profile", "ProfileStore"]

_WHERE = {
    "AuthClient": "bastion.client.api",
    "Profile": "bastion.client.profile",
    "ProfileStore": "bastion.client.profile",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
