"""Trusted clusters on the API: a leaf establishing trust with this (root) cluster.

Layer: contract. The leaf's auth server (through its process's dialer) calls
:data:`VALIDATE_TRUST` on the root's proxy after checking the root's CA pin; the token is a
``trusted_cluster`` join token of the root (docs/trusted-clusters.md).
"""

from __future__ import annotations

from bastion.contract.base import Body, Endpoint, Reply
from bastion.types.trust import ClusterCAs

__all__ = ["VALIDATE_TRUST", "TrustAnswer", "ValidateTrust"]


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
