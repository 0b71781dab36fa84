from bastion.types.inventory import CommandLabel, Node, NodeSpec
from bastion.types.meta import Metadata


def test_all_labels_merges_command_labels():
    node = Node(
        metadata=Metadata(name="n", labels={"env": "prod"}),
        spec=NodeSpec(cmd_labels={"kernel": CommandLabel(command=["uname", "-r"], result="6.1")}),
    )
    assert node.all_labels() == {"env": "prod", "kernel": "6.1"}


def test_node_online_from_the_heartbeat_and_the_tunnel():
    from datetime import UTC, datetime, timedelta

    from bastion.types.inventory import node_online

    now = datetime(2030, 1, 1, tzinfo=UTC)

    def node(expires: datetime | None, **spec: object) -> Node:
        return Node(metadata=Metadata(name="n", expires=expires), spec=NodeSpec(**spec))

    fresh, stale = now + timedelta(seconds=90), now - timedelta(seconds=1)
    assert node_online(node(fresh, host_id="h"), now) is True
    assert node_online(node(stale, host_id="h"), now) is False  # its agent stopped heartbeating
    assert node_online(node(fresh, host_id="h", tunnel=True), now, True) is True
    assert node_online(node(fresh, host_id="h", tunnel=True), now, False) is False
    assert node_online(node(fresh, host_id="h", tunnel=False, addr="a:1"), now, False) is True
    assert node_online(node(None, agentless=True, addr="a:22"), now) is None  # cannot tell
