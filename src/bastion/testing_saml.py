"""Deprecated shim: re-exports :mod:`bastion.testing.peers.saml` for code not yet moved to it."""

from __future__ import annotations

from bastion.testing.peers.saml import (
    SAMLTestIdP,
    sp_metadata,
)

__all__ = [
    "SAMLTestIdP",
    "sp_metadata",
]
