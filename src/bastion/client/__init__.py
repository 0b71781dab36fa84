"""Clients of the auth API: the typed HTTP client and the on-disk profiles of bsh and bctl."""

from bastion.client.api import AuthClient
from bastion.client.profile import Profile, ProfileStore

__all__ = ["AuthClient", "Profile", "ProfileStore"]
