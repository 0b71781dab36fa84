"""Fixtures for the SSH node tests: a node served through ``SSHNode.accept`` on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "agent"))
from nodeharness import NodeHarness, RawAccept, make_node  # noqa: E402


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[NodeHarness]:
    h = await make_node(tmp_path)
    tasks: set[asyncio.Task[None]] = set()
    server = await asyncio.get_running_loop().create_server(
        lambda: RawAccept(h.node, tasks), "127.0.0.1", 0
    )
    h.port = server.sockets[0].getsockname()[1]
    try:
        yield h
    finally:
        server.close()
        await h.node.close()
        await server.wait_closed()
