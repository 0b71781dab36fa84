import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from bastion.auth.trust import PUSHED_CA_TYPES, TrustService, cluster_cas
from bastion.contract.base import Endpoint
from bastion.contract.trust import RECORD_TUNNEL, TunnelReport, TunnelReported
from bastion.errors import AccessDenied, BastionError, ConnectionProblem, NotFound
from bastion.proxy.cluster_route import (
    MAX_PROXIES,
    CacheTrust,
    ClusterHub,
    HubDeps,
    cluster_request,
    leaf_tunnel_proxies,
    proxy_addrs,
)
from bastion.services.cache import ResourceCache
from bastion.testing import make_auth
from bastion.types.codec import resource_to_dict
from bastion.types.inventory import ProxyServer, ProxyServerSpec
from bastion.types.meta import Metadata, Resource
from bastion.types.trust import RemoteCluster, RemoteClusterSpec


def _hub() -> ClusterHub:
    deps = HubDeps.__new__(HubDeps)  # only the cluster name (and a fake trust) used below
    for name, value in (("cluster", "root.test"), ("cert_pem", ""), ("key_pem", "")):
        object.__setattr__(deps, name, value)
    return ClusterHub(deps)


def test_only_other_clusters_are_forwarded() -> None:
    hub = _hub()
    assert hub.wants(cluster_request("leaf.test", op="list").strip())
    assert not hub.wants(cluster_request("root.test", node="n", login="l").strip())
    assert not hub.wants(json.dumps({"node": "n", "login": "l"}).encode())
    assert not hub.wants(b"not json")
    assert not hub._anchors  # no remote clusters known yet


def test_the_clusters_listing_is_answered_by_the_root() -> None:
    hub = _hub()
    assert hub.wants(json.dumps({"op": "clusters"}).encode())
    assert hub.wants(cluster_request("root.test", op="clusters").strip())


class _Trust:
    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []

    async def heartbeat_remote(self, name: str, status: str, seen: object) -> None:
        self.written.append((name, status))


async def test_a_suspended_leaf_shows_as_suspended_until_it_connects() -> None:
    hub = _hub()
    trust = _Trust()
    object.__setattr__(hub._deps, "trust", trust)
    now = datetime.now(UTC)
    hub._suspended.add("leaf.test")  # the leaf said so before it closed its tunnel
    await hub._heartbeat("leaf.test", "online", now, now)
    assert trust.written == [("leaf.test", "suspended")]
    hub._suspended.clear()  # e.g. this proxy restarted: the stored status stays
    await hub._heartbeat("leaf.test", "suspended", now, now)
    await hub._heartbeat("other.test", "online", now, now)  # gone without a word: offline
    assert trust.written[1:] == [("other.test", "offline")]


def _proxy(name: str, addr: str, host_id: str = "proxy", expires: datetime | None = None) -> Any:
    return ProxyServer(
        metadata=Metadata(name=name, expires=expires),
        spec=ProxyServerSpec(public_addr=addr, host_id=host_id),
    )


def test_leaves_follow_the_root_proxies_that_take_leaf_tunnels() -> None:
    now = datetime.now(UTC)
    records = [
        _proxy("proxy-a", "a.root:3080"),
        _proxy("proxy-b", "b.root:3080", expires=now + timedelta(seconds=30)),
        _proxy("proxy-a2", "a.root:3080"),  # the same address twice
        _proxy("host-1234", "s.root:3080", host_id="host-1234"),  # a proxy of its own
        _proxy("proxy-old", "c.root:3080", expires=now - timedelta(seconds=1)),  # expired
        _proxy("proxy-bad", "d.root:notaport"),
        _proxy("proxy-none", ""),
    ]
    assert leaf_tunnel_proxies(records, now) == ["a.root:3080", "b.root:3080", "s.root:3080"]
    # one (or none): the leaf keeps its tunnel to proxy_addr, which it can reach
    assert leaf_tunnel_proxies(records[:1], now) == []
    assert leaf_tunnel_proxies([], now) == []


def test_the_leaf_reads_a_proxies_push_defensively() -> None:
    assert proxy_addrs(["a.root:3080", "[::1]:3081", "bad:port", 7]) == {
        ("a.root", 3080),
        ("::1", 3081),
        ("7", 3080),
    }
    assert proxy_addrs("a.root:3080") == set() and proxy_addrs(None) == set()
    assert len(proxy_addrs([f"p{i}.root:3080" for i in range(500)])) == MAX_PROXIES


def _cached(*resources: Resource, synced: bool = True) -> ResourceCache:
    cache = ResourceCache()
    for resource in resources:
        cache.apply({"type": "put", "kind": resource.kind, "resource": resource_to_dict(resource)})
    if synced:
        cache.apply({"type": "init"})
    return cache


class _Send:
    """A fake ``RemoteAuth.send``: records the reports; answers ``cas_changed`` or fails."""

    def __init__(self, fail: BastionError | None = None) -> None:
        self.reports: list[TunnelReport] = []
        self.fail = fail

    async def __call__(
        self, endpoint: Endpoint[TunnelReport, TunnelReported], body: TunnelReport
    ) -> TunnelReported:
        assert endpoint is RECORD_TUNNEL
        if self.fail is not None:
            raise self.fail
        self.reports.append(body)
        return TunnelReported(cas_changed=body.cas is not None)


async def test_a_standalone_proxy_reads_leaves_and_proxies_from_its_cache() -> None:
    """The cache-backed source (a proxy in its own process): the leaves' records and the
    proxies from the watch; nothing before the snapshot (the hub keeps what it has); no CAs to
    push without this cluster's CA records; it serves no root's users."""
    leaf = await make_auth(cluster="leaf.test")
    cas = await TrustService(leaf.auth).own_cas()
    remote = RemoteCluster(metadata=Metadata(name="leaf.test"), spec=RemoteClusterSpec(cas=cas))
    proxy = _proxy("host-1", "s.root:3080", host_id="host-1")
    with pytest.raises(ConnectionProblem, match="not synced"):
        await CacheTrust(_cached(remote, synced=False), "root.test", _Send()).remotes()
    source = CacheTrust(_cached(remote, proxy), "root.test", _Send())
    assert [r.spec.cas for r in await source.remotes()] == [cas]
    assert [p.name for p in await source.proxies()] == ["host-1"]
    assert await source.own_cas() is None and await source.trusted() == []
    assert await source.tunnel_signing_key() == ""
    with pytest.raises(AccessDenied):
        await source.remote_identity(b"")
    with pytest.raises(AccessDenied):
        await source.update_root_cas("root.test", cas)


async def test_a_standalone_proxy_pushes_the_public_cas_from_its_cache() -> None:
    """This cluster's CAs from the watch's secret-free records are exactly what the auth
    process pushes (the same function), rotation keys included; another cluster's CA records
    are ignored, and nothing is pushed while one of the four is missing."""
    root = await make_auth(cluster="root.test")
    await root.auth.rotate_ca("tls_host", "init", "admin")
    records = [(await root.auth.issuer.ca(t)).without_secrets() for t in PUSHED_CA_TYPES]
    assert all(not k.private_key_encrypted for r in records for k in r.spec.trusted_keys())
    other = await make_auth(cluster="other.test")
    foreign = (await other.auth.issuer.ca("tls_user")).without_secrets()
    foreign.metadata = Metadata(name="tls_user-other.test")
    source = CacheTrust(_cached(*records, foreign), "root.test", _Send())
    pushed = await source.own_cas()
    assert pushed is not None and pushed == await cluster_cas(root.auth)
    assert pushed.tls_host_ca.count("BEGIN CERTIFICATE") == 2  # the rotation's new key too
    partial = CacheTrust(_cached(*records[1:]), "root.test", _Send())
    assert await partial.own_cas() is None


async def test_a_standalone_proxy_writes_tunnel_status_and_leaf_cas_through_auth() -> None:
    """Status, last heartbeat and the CAs a leaf pushed go to auth (RECORD_TUNNEL); a failed
    status write is logged (sent again at the next refresh), a refused CA push raises (the hub
    logs it)."""
    leaf = await make_auth(cluster="leaf.test")
    cas = await TrustService(leaf.auth).own_cas()
    send = _Send()
    source = CacheTrust(_cached(), "root.test", send)
    seen = datetime.now(UTC)
    await source.heartbeat_remote("leaf.test", "online", seen)
    assert await source.update_leaf_cas("leaf.test", cas)
    assert send.reports == [
        TunnelReport(leaf="leaf.test", connection="online", last_heartbeat=seen),
        TunnelReport(leaf="leaf.test", cas=cas),
    ]
    failing = CacheTrust(_cached(), "root.test", _Send(NotFound("no remote cluster")))
    await failing.heartbeat_remote("gone.test", "offline", None)  # logged, not raised
    with pytest.raises(NotFound):
        await failing.update_leaf_cas("gone.test", cas)


class _Listener:
    def __init__(self) -> None:
        self.cas: list[str] = []

    def trust_tunnel_ca(self, pem: str) -> None:
        self.cas.append(pem)


async def test_the_hub_of_a_standalone_proxy_verifies_leaf_tunnels_as_in_process() -> None:
    """The same hub code over the cache: the leaf's host CA joins the tunnel listener, a tunnel
    certificate the leaf signed for itself is accepted as that leaf, and a certificate of a
    cluster with no record (or claiming the recorded leaf's name) is refused."""
    leaf = await make_auth(cluster="leaf.test")
    leaf_trust = TrustService(leaf.auth)
    cas = await leaf_trust.own_cas()
    remote = RemoteCluster(metadata=Metadata(name="leaf.test"), spec=RemoteClusterSpec(cas=cas))
    hub = _hub()
    object.__setattr__(hub._deps, "trust", CacheTrust(_cached(remote), "root.test", _Send()))
    object.__setattr__(hub._deps, "clock", leaf.clock)
    listener = _Listener()
    hub._listener = listener
    await hub.refresh()
    assert listener.cas == [cas.tls_host_ca]
    cert_pem, _ = await leaf_trust.tunnel_certificate()
    found = hub.verify_tunnel(x509.load_pem_x509_certificate(cert_pem.encode()))
    assert (found.cluster, found.kind) == ("leaf.test", "host") and hub.is_leaf(found)
    other = await make_auth(cluster="other.test")
    foreign, _ = await TrustService(other.auth).tunnel_certificate()
    with pytest.raises(AccessDenied, match="not from a trusted leaf"):
        hub.verify_tunnel(x509.load_pem_x509_certificate(foreign.encode()))
