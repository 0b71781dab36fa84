"""Trusted clusters on the API: a leaf establishing trust with this (root) cluster.

Layer: contract. The leaf's auth server (through its process's dialer) calls
:data:`VALIDATE_TRUST` on the root's proxy after checking the root's CA pin; the token is a
``trusted_cluster`` join token of the root (docs/trusted-clusters.md). A root's proxy in its own
process records its leaf tunnels with :data:`RECORD_TUNNEL` (proxy host certificates only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from bastion.contract.base import Body, Endpoint, Reply
from bastion.types.trust import ClusterCAs

__all__ = [
    "RECORD_TUNNEL",
    "VALIDATE_TRUST",
    "TrustAnswer",
    "TunnelReport",
    "TunnelReported",
    "ValidateTrust",
]


class ValidateTrust(Body):
    token: str
    leaf: ClusterCAs
    """The leaf's name and the public parts of its CAs."""


class TrustAnswer(Reply):
    root: ClusterCAs
    """The root's name and the public parts of its CAs."""


VALIDATE_TRUST = Endpoint(
    "POST",
    "/v1/trust/validate",
    "public",
    "A leaf cluster establishes trust with a trusted_cluster join token",
    body=ValidateTrust,
    response=TrustAnswer,
    tags=("trust",),
)


class TunnelReport(Body):
    """A leaf tunnel held by a proxy in its own process (root side)."""

    leaf: str
    connection: Literal["online", "offline", "suspended"] | None = None
    """The tunnel's status, with ``last_heartbeat`` (none: only ``cas``)."""
    last_heartbeat: datetime | None = None
    cas: ClusterCAs | None = None
    """The CAs the leaf pushed through its tunnel (a CA rotation there)."""


class TunnelReported(Reply):
    cas_changed: bool


RECORD_TUNNEL = Endpoint(
    "POST",
    "/v1/trust/tunnel",
    "host",
    "A proxy in its own process records a leaf tunnel's status and the CAs the leaf pushed",
    body=TunnelReport,
    response=TunnelReported,
    tags=("trust",),
)
