"""What every agent shares: in-process identities, the in-memory tunnel hand-off, joins and
following the proxies auth advertises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.runner import (
    advertised,
    follow_proxies,
    in_process_connector,
    joined_identity,
    local_host_identity,
    stored_host_id,
)
from bastion.config.schema import FileConfig
from bastion.errors import BadParameter
from bastion.services.cache import ResourceCache
from bastion.testing import make_auth
from bastion.tunnel.session import MuxSession
from bastion.types.codec import resource_to_dict
from bastion.types.inventory import Node, ProxyServer, ProxyServerSpec
from bastion.types.meta import Metadata


async def test_an_in_process_agent_keeps_its_host_id_across_restarts(tmp_path: Path) -> None:
    fx = await make_auth()
    first = await local_host_identity(fx.auth, tmp_path, "db1", "db", fx.clock)
    assert first.identity.roles == ("db",) and first.identity.kind == "host"
    assert json.loads((tmp_path / "identity.json").read_text())["role"] == "db"
    assert stored_host_id(tmp_path, "db1") == first.identity.host_id
    again = await local_host_identity(fx.auth, tmp_path, "db1", "db", fx.clock)
    assert again.identity.host_id == first.identity.host_id
    assert stored_host_id(tmp_path, "other-name") == ""
    assert again.tls[0] == again.certs.tls_cert and "PRIVATE KEY" in again.tls[1]


async def test_the_in_process_connector_hands_the_tunnel_to_the_proxy(tmp_path: Path) -> None:
    fx = await make_auth()
    host = await local_host_identity(fx.auth, tmp_path, "app1", "app", fx.clock)
    accepted: list[Any] = []

    class Tunnel:
        def accept(self, transport: Any, identity: Any) -> None:
            accepted.append(identity)

    class Proxy:
        tunnel = Tunnel()

    connect = in_process_connector(Proxy(), host.certs.identity, "app agent app1")
    session = await connect(lambda: MuxSession("client"))
    assert accepted == [host.certs.identity] and not session.is_closed
    session.abort("done")


async def test_a_join_needs_its_settings_and_the_right_role(tmp_path: Path) -> None:
    config = FileConfig()
    with pytest.raises(BadParameter, match="db_service.join_token"):
        await joined_identity(
            config, tmp_path / "db", name="d", role="db", section="db_service",
            proxy_server="", join_token="", ca_pin="",
        )  # fmt: skip
    with pytest.raises(BadParameter, match="ca_pin is required"):
        await joined_identity(
            config, tmp_path / "db", name="d", role="db", section="db_service",
            proxy_server="p:3080", join_token="t", ca_pin="",
        )  # fmt: skip


def test_agents_follow_the_proxies_auth_advertises() -> None:
    cache = ResourceCache()
    seen: list[set[tuple[str, int]]] = []

    class Pool:
        def update(self, proxies: set[tuple[str, int]]) -> None:
            seen.append(proxies)

    follow_proxies(Pool(), cache)  # type: ignore[arg-type]
    proxy = ProxyServer(
        metadata=Metadata(name="p1"), spec=ProxyServerSpec(public_addr="p1.example:3080")
    )
    cache.apply({"type": "put", "kind": "proxy", "resource": resource_to_dict(proxy)})
    assert seen == []  # not synced yet: an incomplete view would drop tunnels
    cache.apply({"type": "init"})
    assert seen[-1] == {("p1.example", 3080)}


def test_advertised_addresses_come_from_proxy_records_only() -> None:
    records = [
        ProxyServer(metadata=Metadata(name="p1"), spec=ProxyServerSpec(public_addr="a:443")),
        ProxyServer(metadata=Metadata(name="p2"), spec=ProxyServerSpec(public_addr="[::1]:9")),
        ProxyServer(metadata=Metadata(name="p3")),  # nothing advertised yet
        Node(metadata=Metadata(name="n1")),
    ]
    assert advertised(records) == {("a", 443), ("::1", 9)}
