from bastion.types.inventory import CommandLabel, Node, NodeSpec
from bastion.types.meta import Metadata


def test_all_labels_merges_command_labels():
    node = Node(
        metadata=Metadata(name="n", labels={"env": "prod"}),
        spec=NodeSpec(cmd_labels={"kernel": CommandLabel(command=["uname", "-r"], result="6.1")}),
    )
    assert node.all_labels() == {"env": "prod", "kernel": "6.1"}
