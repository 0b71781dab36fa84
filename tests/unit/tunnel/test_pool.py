"""Which tunnels an agent holds for the proxies it is told of (pure part of the pool)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.tunnel.pool import tunnel_keys

BOOT = ("127.0.0.1", 3080)


def test_nothing_advertised_keeps_the_bootstrap_tunnel() -> None:
    assert tunnel_keys(set(), BOOT) == {None}


def test_the_bootstrap_address_advertised_stays_the_bootstrap_tunnel() -> None:
    # The all-in-one's own proxy heartbeats beside a proxy in its own process: an agent joined
    # through the all-in-one keeps that tunnel (and the in-process connector keeps serving it).
    assert tunnel_keys({BOOT, ("10.0.0.2", 3080)}, BOOT) == {None, ("10.0.0.2", 3080)}


def test_a_bootstrap_address_not_advertised_is_dropped() -> None:
    # A load balancer's address: never a tunnel beside the proxies it forwards to.
    lb = ("lb.example.com", 443)
    assert tunnel_keys({("10.0.0.1", 3080), ("10.0.0.2", 3080)}, lb) == {
        ("10.0.0.1", 3080),
        ("10.0.0.2", 3080),
    }


def test_host_names_compare_without_case() -> None:
    assert tunnel_keys({("Proxy.Example.com", 3080)}, ("proxy.example.com", 3080)) == {None}


addrs = st.tuples(st.sampled_from(["a", "b", "c", "127.0.0.1"]), st.sampled_from([1, 2, 3080]))


@given(st.sets(addrs, max_size=5), addrs)
def test_one_tunnel_per_proxy_and_never_an_extra(
    advertised: set[tuple[str, int]], boot: tuple[str, int]
) -> None:
    keys = tunnel_keys(advertised, boot)
    assert len(keys) == max(len(advertised), 1)
    assert (None in keys) == (not advertised or boot in advertised)
    assert boot not in keys
