"""bsh and trusted clusters: ``bsh ls --cluster=LEAF`` and ``bsh ssh --cluster=LEAF``.

Layer: cli. The work is in :mod:`bastion.client.clusters` (routes through the root's proxy).
"""

from __future__ import annotations

from typing import Any

import asyncssh

from bastion.client.clusters import connect_leaf, leaf_call
from bastion.client.profile import Profile

__all__ = ["leaf_connect", "leaf_nodes"]


async def leaf_nodes(profile: Profile, cluster: str) -> list[dict[str, Any]]:
    """The leaf's nodes the leaf's mapped roles let this user see, as node-like documents."""
    reply = await leaf_call(profile, cluster, "list")
    return [
        {
            "kind": "node",
            "metadata": {"name": n.get("name", ""), "labels": n.get("labels", {})},
            "spec": {},
            "cluster": cluster,
        }
        for n in reply.get("nodes", [])
        if isinstance(n, dict)
    ]


async def leaf_connect(
    profile: Profile, cluster: str, node: str, login: str, port: int, **tuning: Any
) -> asyncssh.SSHClientConnection:
    return await connect_leaf(profile, cluster, node, login, port, **tuning)
