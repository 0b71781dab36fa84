"""NodeConfig/NodeDeps are plain frozen values."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.agent.deps import NodeConfig


def test_node_config_is_frozen_with_defaults() -> None:
    config = NodeConfig("n", "c", "h", "key", "cert", ("ca",))
    assert config.labels == {} and config.cmd_labels == {} and config.shell == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]
