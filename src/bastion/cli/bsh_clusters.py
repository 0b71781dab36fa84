"""bsh and trusted clusters: ``bsh clusters``, ``bsh ls --cluster=LEAF`` and ``bsh ssh
--cluster=LEAF``.

Layer: cli. The work is in :mod:`bastion.client.clusters` (routes through the root's proxy);
plain OpenSSH (``ssh NODE.LEAF``) is :mod:`bastion.cli.leaf_proxy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncssh
import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.render import print_json, print_table
from bastion.client.clusters import connect_leaf, leaf_call, list_clusters
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import check_profile

__all__ = ["cluster_rows", "clusters_command", "leaf_connect", "leaf_nodes", "remember_leaves"]

CLUSTER_COLUMNS = ("NAME", "STATUS", "LAST HEARTBEAT", "ROLES", "LOGINS")


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


def cluster_rows(clusters: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table rows of ``bsh clusters`` (pure)."""

    def words(value: object) -> str:
        return ",".join(str(v) for v in value) if isinstance(value, list) else ""

    return [
        [
            str(c.get("name", "")),
            str(c.get("status", "")),
            str(c.get("last_heartbeat") or "-"),
            words(c.get("roles")),
            words(c.get("logins")),
        ]
        for c in clusters
    ]


def remember_leaves(profile: Profile, names: Sequence[str]) -> None:
    """Record the leaves in the profile (``PROFILE/leaves/LEAF/``): ``bsh ssh NODE.LEAF`` then
    goes through OpenSSH with a leaf certificate (:mod:`bastion.cli.leaf_proxy`)."""
    from bastion.cli.leaf_proxy import leaf_dir  # stdlib only

    for name in names:
        leaf_dir(profile.path, name).mkdir(parents=True, exist_ok=True, mode=0o700)


@click.command("clusters")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def clusters_command(fmt: str) -> None:
    """List the leaf clusters you may reach through this cluster (status, last heartbeat, and
    the roles and logins each leaf maps you to).

    \b
    Examples:
      bsh clusters
      bsh ls --cluster=leaf.example.com
      ssh root@web1.leaf.example.com     # after bsh config >> ~/.ssh/config
    """
    profile = ProfileStore().load()
    check_profile(profile)
    found = run_async(list_clusters(profile))
    remember_leaves(profile, [str(c.get("name", "")) for c in found if c.get("name")])
    if fmt == "json":
        print_json(found)
        return
    print_table(CLUSTER_COLUMNS, cluster_rows(found), empty="No leaf clusters you may reach.")
