"""free_port: the one way tests and benchmarks pick an ephemeral loopback port."""

from __future__ import annotations

import socket

from bastion.testing.peers.ports import free_port


def test_free_port_is_a_bindable_loopback_port() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:  # bind only: the unit guard forbids listen/connect
        sock.bind(("127.0.0.1", port))
