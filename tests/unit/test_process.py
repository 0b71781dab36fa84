"""How a proxy names and addresses itself in its heartbeats (pure parts of bastion.process)."""

from __future__ import annotations

import socket

from bastion.config.schema import FileConfig
from bastion.process import proxy_record_name
from bastion.proxy.service import ALL_IN_ONE_PROXY


def _config(**proxy: object) -> FileConfig:
    return FileConfig.model_validate({"proxy_service": proxy})


def test_public_address_is_advertised_first() -> None:
    cfg = _config(listen_addr="0.0.0.0:3080", public_addr=["proxy.example.com:443", "other:1"])
    assert cfg.proxy_advertised_addr(3080) == "proxy.example.com:443"


def test_listen_host_with_the_bound_port() -> None:
    assert _config(listen_addr="127.0.0.1:0").proxy_advertised_addr(41234) == "127.0.0.1:41234"


def test_wildcard_listen_host_becomes_the_host_name() -> None:
    assert _config(listen_addr="0.0.0.0:3080").proxy_advertised_addr(3080) == (
        f"{socket.gethostname()}:3080"
    )


def test_ipv6_hosts_are_bracketed() -> None:
    assert _config(listen_addr="[::1]:0").proxy_advertised_addr(5000) == "[::1]:5000"


def test_all_in_ones_are_named_by_address_others_by_host_id() -> None:
    assert proxy_record_name("8f3c-host", "10.0.0.1:3080") == "8f3c-host"
    one = proxy_record_name(ALL_IN_ONE_PROXY, "10.0.0.1:3080")
    two = proxy_record_name(ALL_IN_ONE_PROXY, "10.0.0.2:3080")
    assert one != two and one == "proxy-10.0.0.1-3080"
    assert proxy_record_name(ALL_IN_ONE_PROXY, "[::1]:3080") == "proxy----1--3080"
