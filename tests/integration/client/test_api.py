"""The API client against a closed loopback port: connection errors read as a reason, not as
object reprs (the pure parts: tests/unit/client/test_api.py)."""

from __future__ import annotations

import asyncio

from bastion.client.api import AuthClient
from bastion.contract.core import PING
from bastion.errors import ConnectionProblem
from bastion.testing.peers.ports import free_port


def test_unreachable_server_is_a_short_reason() -> None:
    port = free_port()  # closed again: nothing listens there

    async def go() -> str:
        async with AuthClient(f"127.0.0.1:{port}", False) as client:
            try:
                await client.send(PING)
            except ConnectionProblem as exc:
                return exc.message
        raise AssertionError("no error")

    message = asyncio.run(go())
    assert f"cannot reach the server at 127.0.0.1:{port}: Connection refused;" in message
    assert "SSLContext object" not in message and "0x" not in message
