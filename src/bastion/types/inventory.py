"""Inventory resources that agents and proxies heartbeat (with a TTL): SSH nodes and proxies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from bastion.types.meta import Resource, StrictModel

__all__ = [
    "CommandLabel",
    "Node",
    "NodeSpec",
    "ProxyServer",
    "ProxyServerSpec",
    "node_online",
    "with_command_labels",
]


class CommandLabel(StrictModel):
    command: list[str]
    period: str = "1m"
    result: str = ""


def with_command_labels(
    labels: Mapping[str, str], commands: Mapping[str, CommandLabel]
) -> dict[str, str]:
    """Static ``labels`` plus the latest results of command labels (a command label wins over
    a static one of the same name): what RBAC matches for nodes and databases."""
    merged = dict(labels)
    for key, label in commands.items():
        merged[key] = label.result
    return merged


class NodeSpec(StrictModel):
    hostname: str = ""
    addr: str = ""
    """``host:port`` when the node listens directly; empty when it is reached by reverse tunnel."""
    tunnel: bool = False
    host_id: str = ""
    """Host id of the agent serving this node (from its host certificate); the proxy dials the
    node through that agent's reverse tunnel."""
    cmd_labels: dict[str, CommandLabel] = Field(default_factory=dict)
    version: str = ""
    agentless: bool = False
    """A stock OpenSSH sshd trusting the exported user CA."""


class Node(Resource):
    KIND: ClassVar[str] = "node"
    kind: str = "node"
    spec: NodeSpec = Field(default_factory=NodeSpec)

    def all_labels(self) -> dict[str, str]:
        """Static labels plus the latest results of dynamic command labels."""
        return with_command_labels(self.metadata.labels, self.spec.cmd_labels)


def node_online(node: Node, now: datetime, tunnel_connected: bool | None = None) -> bool | None:
    """Whether the cluster knows ``node`` to be reachable now (pure).

    An agent's node record carries the expiry of its last heartbeat (three heartbeat intervals
    ahead, capped by the auth server): a record past it is stale, the agent stopped. A node
    reached by reverse tunnel is offline as soon as its tunnel is known to be down
    (``tunnel_connected`` is False; ``None`` when this process holds no tunnels). A record
    without a heartbeat (an agentless OpenSSH node an admin created) is ``None``: unknown.
    """
    if node.spec.tunnel and node.spec.host_id and tunnel_connected is False:
        return False
    if node.metadata.expires is None:
        return None
    return node.metadata.expires > now


class ProxyServerSpec(StrictModel):
    public_addr: str = ""
    """``host:port`` where agents reach this proxy directly to hold a reverse tunnel to it."""
    host_id: str = ""
    """Host id of the proxy (from its host certificate)."""
    version: str = ""


class ProxyServer(Resource):
    """A proxy running in its own process, advertised by its heartbeats (named by its host
    name): agents keep a reverse tunnel to each one, so any proxy reaches any node."""

    KIND: ClassVar[str] = "proxy"
    kind: str = "proxy"
    spec: ProxyServerSpec = Field(default_factory=ProxyServerSpec)
