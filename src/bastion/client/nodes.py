"""Node resources as the clients see them (pure): names, labels, label selectors, search.

Layer: client (no IO, stdlib and :mod:`bastion.errors` only). ``bsh ls``
(:mod:`bastion.cli.bsh_ls`, which must start without asyncssh) and ``bsh ssh``'s fan-out to
``k=v`` selectors (:mod:`bastion.cli.bsh_ssh`, :mod:`bastion.client.ssh`) share them. A node
is the JSON form of its resource (``kind``, ``metadata``, ``spec``), plus ``online`` when the
listing said.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import BadParameter

__all__ = ["filter_nodes", "match_labels", "node_labels", "node_name", "parse_selector"]


def parse_selector(node: str) -> dict[str, str] | None:
    """``k=v[,k=v]`` into a label dict, or None when ``node`` is a plain name.

    Raises:
        BadParameter: an empty key or a part without ``=``.
    """
    if "=" not in node:
        return None
    labels: dict[str, str] = {}
    for part in node.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadParameter(f"invalid label selector {node!r}: expected key=value[,key=value]")
        labels[key] = value.strip()
    return labels


def node_labels(node: dict[str, Any]) -> dict[str, str]:
    """Static labels plus the current results of command labels of a node resource."""
    labels = {str(k): str(v) for k, v in (node.get("metadata", {}).get("labels") or {}).items()}
    for key, cmd in (node.get("spec", {}).get("cmd_labels") or {}).items():
        labels[str(key)] = str((cmd or {}).get("result", "")).strip()
    return labels


def match_labels(node: dict[str, Any], selector: dict[str, str]) -> bool:
    """Every ``k=v`` of ``selector`` equals the node's label ``k`` (``v`` ``*``: any value)."""
    labels = node_labels(node)
    return all(k in labels and (v == "*" or labels[k] == v) for k, v in selector.items())


def node_name(node: dict[str, Any]) -> str:
    """What people type (``bsh ssh NAME``, ``ssh NAME.CLUSTER``): the node's resource name
    (``node_name`` in its config), never its OS hostname, which two nodes may share."""
    return str(node.get("metadata", {}).get("name", ""))


def filter_nodes(
    nodes: list[dict[str, Any]], selector: dict[str, str], search: list[str]
) -> list[dict[str, Any]]:
    """Nodes whose labels match ``selector`` and whose name, hostname or labels hold every word
    of ``search`` (case-insensitive), sorted by name."""
    words = [w.lower() for w in search if w]
    found = []
    for node in nodes:
        if not match_labels(node, selector):
            continue
        haystack = " ".join(
            [
                node_name(node),
                str(node.get("spec", {}).get("hostname", "")),
                *(f"{k}={v}" for k, v in node_labels(node).items()),
            ]
        ).lower()
        if all(w in haystack for w in words):
            found.append(node)
    return sorted(found, key=node_name)
