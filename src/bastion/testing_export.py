"""Deprecated shim: re-exports :mod:`bastion.testing.peers.export` for code not yet moved to it."""

from __future__ import annotations

from bastion.testing.peers.export import (
    HttpReceiver,
    Pki,
    SyslogCollector,
    make_pki,
)

__all__ = [
    "HttpReceiver",
    "Pki",
    "SyslogCollector",
    "make_pki",
]
