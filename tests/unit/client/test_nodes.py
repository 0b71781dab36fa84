"""Node resources as clients see them: selectors, labels, names and search (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.client.nodes import filter_nodes, match_labels, node_labels, node_name, parse_selector
from bastion.errors import BadParameter


def _node(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"kind": "node", "metadata": {"name": name, "labels": labels}, "spec": spec}


def test_selectors_and_plain_names() -> None:
    assert parse_selector("web1") is None
    assert parse_selector(" env = prod ,team=db") == {"env": "prod", "team": "db"}
    for bad in ("=x", "env=prod,team"):
        with pytest.raises(BadParameter, match="key=value"):
            parse_selector(bad)


def test_labels_include_command_results_and_star_matches_any_value() -> None:
    node = _node("n1", {"env": "prod"}, cmd_labels={"arch": {"result": "x86_64\n"}, "e": None})
    assert node_labels(node) == {"env": "prod", "arch": "x86_64", "e": ""}
    assert match_labels(node, {"arch": "*"}) and not match_labels(node, {"team": "*"})
    assert node_name(node) == "n1" and node_name({}) == ""


def test_filter_matches_labels_and_every_word_sorted_by_resource_name() -> None:
    nodes = [
        _node("b", {"env": "prod"}, hostname="web-b"),
        _node("a", {"env": "prod"}, hostname="web-a"),
        _node("c", {"env": "dev"}, hostname="web-c"),
    ]
    found = filter_nodes(nodes, {"env": "prod"}, ["WEB", ""])
    assert [node_name(n) for n in found] == ["a", "b"]
    assert filter_nodes(nodes, {}, ["web", "env=dev"]) == [nodes[2]]
