"""MuxSession keepalive against a silent peer: the keepalive interval is real time (the rest of the
mux session runs in memory: tests/unit/tunnel/test_session.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.testing.pipes import Pipe, pipe_pair
from bastion.tunnel.session import MuxSession


async def make_sessions(
    on_stream: Any = None, **kwargs: Any
) -> tuple[MuxSession, MuxSession, Pipe, Pipe]:
    proxy_end, agent_end = pipe_pair()
    server = MuxSession("server", **kwargs)
    client = MuxSession("client", on_stream=on_stream, **kwargs)
    proxy_end.set_protocol(server)
    agent_end.set_protocol(client)
    server.connection_made(proxy_end)
    client.connection_made(agent_end)
    return server, client, proxy_end, agent_end


async def test_keepalive_detects_dead_peer() -> None:
    server, _client, proxy_end, agent_end = await make_sessions(
        None, keepalive_interval=0.02, keepalive_timeout=0.1
    )
    await asyncio.sleep(0.05)
    assert not server.is_closed  # pings answered: alive
    agent_end.black_hole = True  # the agent stops answering
    await asyncio.wait_for(server.wait_closed(), 1)
    assert "keepalive" in server.close_reason
    assert proxy_end.closed
