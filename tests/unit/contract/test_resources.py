"""Resource endpoints: lists carry typed resources and, for nodes, online status."""

from __future__ import annotations

from bastion.contract.resources import (
    CREATE_RESOURCE,
    DELETE_RESOURCE,
    LIST_RESOURCES,
    UPDATE_RESOURCE,
    ResourceList,
    WriteQuery,
)
from bastion.types.inventory import Node


def test_a_node_list_is_typed_and_online_may_be_unknown() -> None:
    listed = ResourceList.model_validate(
        {
            "items": [{"kind": "node", "metadata": {"name": "web1"}, "spec": {"addr": "h:22"}}],
            "online": {"web1": None},
        }
    )
    assert isinstance(listed.items[0], Node) and listed.online == {"web1": None}


def test_writes_take_force_and_are_any_audience() -> None:
    assert WriteQuery().force is False
    assert CREATE_RESOURCE.query is WriteQuery is UPDATE_RESOURCE.query
    assert {e.audience for e in (LIST_RESOURCES, CREATE_RESOURCE, DELETE_RESOURCE)} == {"any"}
