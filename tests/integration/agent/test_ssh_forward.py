"""direct-tcpip connect failures become channel open failures (success paths: test_ssh_node)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncssh
import pytest

from bastion.agent.ssh_forward import open_direct_tcpip
from bastion.live.registry import LiveConnection
from bastion.testing.peers.ports import free_port
from bastion.types.identity import Identity


async def test_unreachable_destination_is_connect_failed() -> None:
    port = free_port()  # closed again: nothing listens there
    entry = LiveConnection(
        kind="port_forward",
        identity=Identity(cluster="c", user="u", expires=datetime.now(UTC)),
        target="n",
    )
    with pytest.raises(asyncssh.ChannelOpenError) as info:
        await open_direct_tcpip("127.0.0.1", port, entry)
    assert info.value.code == asyncssh.OPEN_CONNECT_FAILED
