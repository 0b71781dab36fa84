"""The pure parts of bastion.api.proxy_header (the socket parts run in tests/integration:
test_proxy.py for the proxy's port, test_ha.py for the auth port behind proxies)."""

from __future__ import annotations

import gc

from bastion.api.proxy_header import ClientAddresses, TrustedSources


def test_trusted_sources_match_cidrs_and_refuse_junk() -> None:
    trusted = TrustedSources(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    assert "127.0.0.1" in trusted
    assert "10.1.2.3" in trusted
    assert "fd00::1" in trusted
    assert "127.0.0.2" not in trusted
    assert "not-an-ip" not in trusted
    assert bool(trusted)
    assert not TrustedSources([])


def test_client_addresses_follow_the_transport_lifetime() -> None:
    class Transport:
        pass

    clients = ClientAddresses()
    transport = Transport()
    clients.set(transport, "192.0.2.7")
    assert clients.get(transport) == "192.0.2.7"
    assert clients.get(Transport()) is None
    assert clients.get(None) is None
    del transport
    gc.collect()
    assert len(clients._by_transport) == 0
