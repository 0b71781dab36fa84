"""``bsh ls``: the nodes you may reach, from the node catalog (``LIST_RESOURCES`` of ``node``).

Layer: client edge (CLI). The listing is one typed call of the contract made with the blocking
stdlib transport (:func:`bastion.client.stdhttp.send_sync`): ``bsh ls`` loads neither asyncio,
aiohttp nor asyncssh, which ``bsh ssh`` needs (:mod:`bastion.cli.bsh_ssh`, whose fan-out to a
``k=v`` selector lists nodes with :func:`list_nodes` too).

The catalog answers after authentication and lists only the nodes the user may reach, so
"not found" and "not allowed" look the same from here, on purpose.
"""

from __future__ import annotations

from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.render import print_json, print_table
from bastion.client.nodes import filter_nodes, node_labels, node_name, parse_selector
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import check_profile
from bastion.client.stdhttp import send_sync
from bastion.client.tls import profile_context
from bastion.errors import BadParameter
from bastion.protocols.alpn import ALPN_HTTP

__all__ = [
    "NODE_COLUMNS",
    "TUNNEL_ADDRESS",
    "list_nodes",
    "ls_command",
    "node_rows",
    "node_status",
]

NODE_COLUMNS = ("NAME", "STATUS", "ADDRESS", "LABELS")
TUNNEL_ADDRESS = "⟵ tunnel"


def node_status(node: dict[str, Any]) -> str:
    """``online``, ``offline``, or ``-`` when the cluster cannot tell (an agentless node)."""
    online = node.get("online")
    return "-" if online is None else ("online" if online else "offline")


def node_rows(nodes: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows NAME, STATUS (:func:`node_status`), ADDRESS (``⟵ tunnel`` for nodes behind a
    reverse tunnel), LABELS."""
    rows = []
    for node in nodes:
        spec = node.get("spec", {})
        addr = TUNNEL_ADDRESS if spec.get("tunnel") else str(spec.get("addr") or "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(node_labels(node).items()))
        rows.append([node_name(node), node_status(node), addr, labels])
    return rows


def list_nodes(profile: Profile) -> list[dict[str, Any]]:
    """Every node the profile's user may reach, as JSON documents with ``online`` (the server's
    liveness verdict; None when it cannot tell)."""
    from bastion.contract.resources import LIST_RESOURCES  # pydantic: on use only
    from bastion.types.codec import resource_to_dict

    ctx = profile_context(profile.path, profile.name, [ALPN_HTTP])
    data = send_sync(ctx, profile.proxy, LIST_RESOURCES, path={"kind": "node"})
    nodes = [resource_to_dict(n) for n in data.items]
    for node in nodes:
        node["online"] = data.online.get(node_name(node)) if data.online is not None else None
    return nodes


@click.command("ls")
@click.argument("labels", nargs=-1)
@click.option("--search", default="", help="Words that must appear in name, hostname or labels.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--cluster", default="", help="A leaf cluster (through this cluster's proxy).")
@handle_errors
def ls_command(labels: tuple[str, ...], search: str, fmt: str, cluster: str) -> None:
    """List the nodes you may reach, filtered by labels (k=v) and words.

    \b
    Examples:
      bsh ls
      bsh ls env=prod --search web
      bsh ls --format json
    """
    selector: dict[str, str] = {}
    for item in labels:
        selector.update(parse_selector(item) or {})
        if "=" not in item:
            raise BadParameter(f"invalid label filter {item!r}: expected key=value")
    profile = ProfileStore().load()
    check_profile(profile)
    if cluster and cluster != profile.cluster:
        from bastion.cli.bsh_clusters import leaf_nodes  # docs/trusted-clusters.md
        from bastion.cli.identity import run_async

        found = run_async(leaf_nodes(profile, cluster))
    else:
        found = list_nodes(profile)
    nodes = filter_nodes(found, selector, search.split())
    if fmt == "json":
        print_json(nodes)
        return
    print_table(NODE_COLUMNS, node_rows(nodes), empty="No nodes found.")
