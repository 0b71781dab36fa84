"""Trusted clusters: the leaf's ``trusted_cluster`` resource and the root's ``remote_cluster``.

Layer: types (pure pydantic). docs/trusted-clusters.md describes the set-up and threat model.

* ``trusted_cluster`` lives on the **leaf**, named after the root cluster. The admin writes
  ``enabled``, ``proxy_addr`` (the root proxy), ``token`` (a ``trusted_cluster`` join token of
  the root), ``ca_pin`` (the root's pin, as for agents) and ``role_map``. The server fills
  ``status`` with the root's CAs (public parts) received when trust was established: only
  identities whose ``cluster`` is the root's name are ever verified against them.
* ``remote_cluster`` lives on the **root**, named after the leaf cluster: the leaf's host and
  user CAs (public parts) and the connection status. The root trusts them only for the leaf's
  reverse tunnel (host CA), never for its own users or hosts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bastion.types.meta import Resource, StrictModel

__all__ = [
    "TRUSTED_CLUSTER_TOKEN_ROLE",
    "ClusterCAs",
    "RemoteCluster",
    "RemoteClusterSpec",
    "RoleMapping",
    "TrustedCluster",
    "TrustedClusterSpec",
    "TrustedClusterStatus",
    "remote_user_name",
]

TRUSTED_CLUSTER_TOKEN_ROLE = "trusted_cluster"
"""The join-token role that lets a leaf establish trust with this (root) cluster."""

_LOCAL_TEMPLATE = re.compile(r"^(\$[0-9]|[A-Za-z0-9._@+-])+$")


class RoleMapping(StrictModel):
    remote: str
    """A regular expression over one root role, anchored at both ends (``dev-(.*)`` matches
    ``dev-web`` but not ``mydev-web``)."""
    local: list[str]
    """Leaf roles to grant; ``$1``..``$9`` are replaced by the remote match's groups."""

    @field_validator("remote")
    @classmethod
    def _check_remote(cls, value: str) -> str:
        if not value or len(value) > 256:
            raise ValueError("remote must be a regular expression of 1 to 256 characters")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"remote {value!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("local")
    @classmethod
    def _check_local(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("local must name at least one role")
        for item in value:
            if not _LOCAL_TEMPLATE.match(item) or len(item) > 253:
                raise ValueError(
                    f"local role {item!r}: use letters, digits, ._@+- and $1..$9 placeholders"
                )
        return value


class ClusterCAs(StrictModel):
    """The public parts of a cluster's CAs (all trusted keys), as exchanged when trust is
    established."""

    cluster: str
    tls_user_ca: str = ""
    """PEM certificates of the user TLS CA."""
    tls_host_ca: str = ""
    ssh_user_ca: list[str] = Field(default_factory=list)
    """OpenSSH public key lines."""
    ssh_host_ca: list[str] = Field(default_factory=list)


class TrustedClusterStatus(StrictModel):
    """Set by the leaf's auth server; anything a client sends here is replaced."""

    root_cas: ClusterCAs | None = None
    established: datetime | None = None


class TrustedClusterSpec(StrictModel):
    enabled: bool = True
    proxy_addr: str
    """``host:port`` of the root cluster's proxy."""
    token: str = ""
    """The root's ``trusted_cluster`` join token; used once, never stored."""
    ca_pin: str = ""
    """``sha256:...`` pin of the root cluster's CA (what ``bastion start`` prints there)."""
    role_map: list[RoleMapping] = Field(default_factory=list)
    status: TrustedClusterStatus = Field(default_factory=TrustedClusterStatus)

    @field_validator("proxy_addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"proxy_addr {value!r}: expected HOST:PORT of the root's proxy")
        return value


class TrustedCluster(Resource):
    KIND: ClassVar[str] = "trusted_cluster"
    kind: str = "trusted_cluster"
    spec: TrustedClusterSpec


class RemoteClusterSpec(StrictModel):
    cas: ClusterCAs
    """The leaf's CAs, trusted on this root for that leaf's tunnel only."""
    connection: Literal["online", "offline", "suspended"] = "offline"
    """The leaf's tunnel: ``suspended`` when the leaf closed it because it set ``enabled:
    false`` on its ``trusted_cluster`` (until it connects again)."""
    last_heartbeat: datetime | None = None
    created_by: str = ""


class RemoteCluster(Resource):
    KIND: ClassVar[str] = "remote_cluster"
    kind: str = "remote_cluster"
    spec: RemoteClusterSpec


def remote_user_name(root_cluster: str, user: str) -> str:
    """How a root user is named on a leaf: ``ROOT/USER`` (locks on the leaf use this name; it
    can never collide with a local user, whose names have no ``/``)."""
    return f"{root_cluster}/{user}"
