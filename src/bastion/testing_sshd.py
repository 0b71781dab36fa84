"""Deprecated shim: re-exports :mod:`bastion.testing.peers.sshd` for code not yet moved to it."""

from __future__ import annotations

from bastion.testing.peers.sshd import (
    SshdServer,
    SshdUnavailable,
    find_ssh_binary,
    find_sshd,
    generate_key,
    local_login,
    start_sshd,
)

__all__ = [
    "SshdServer",
    "SshdUnavailable",
    "find_ssh_binary",
    "find_sshd",
    "generate_key",
    "local_login",
    "start_sshd",
]
