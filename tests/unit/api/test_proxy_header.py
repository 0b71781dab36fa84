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


class _Plain:
    """A transport without TLS (weakly referenced itself)."""

    def get_extra_info(self, name: str) -> object:
        return None


class _SSLObject:
    pass


class _UnreferenceableTLS:
    """Like uvloop's TLS transport: no weak references, but a per-connection SSL object."""

    __slots__ = ("ssl_object",)

    def __init__(self) -> None:
        self.ssl_object = _SSLObject()

    def get_extra_info(self, name: str) -> object:
        return self.ssl_object if name == "ssl_object" else None


def test_client_addresses_follow_the_transport_lifetime() -> None:
    clients = ClientAddresses()
    transport = _Plain()
    clients.set(transport, "192.0.2.7")  # type: ignore[arg-type]
    assert clients.get(transport) == "192.0.2.7"  # type: ignore[arg-type]
    assert clients.get(_Plain()) is None  # type: ignore[arg-type]
    assert clients.get(None) is None
    del transport
    gc.collect()
    assert len(clients._by_transport) == 0


def test_client_addresses_of_tls_transports_are_keyed_by_their_ssl_object() -> None:
    clients = ClientAddresses()
    transport = _UnreferenceableTLS()
    clients.set(transport, "192.0.2.8")  # type: ignore[arg-type]
    assert clients.get(transport) == "192.0.2.8"  # type: ignore[arg-type]
    assert clients.get(_UnreferenceableTLS()) is None  # type: ignore[arg-type]
    del transport
    gc.collect()
    assert len(clients._by_transport) == 0
