"""Trusted clusters in auth (bastion.auth.trust): two in-memory clusters, the root's validate
endpoint called through a fake dialer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.api.tls import identity_from_peer
from bastion.audit.log import AuditQuery
from bastion.auth.guarded import GuardedAuth
from bastion.auth.trust import REMOTE_ONLINE_GRACE, TrustService, validate_leaf
from bastion.ca import x509 as ca_x509
from bastion.clock import FakeClock
from bastion.contract.trust import TrustAnswer, TunnelReport, ValidateTrust
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.rbac.checker import RoleSet
from bastion.rbac.session_mfa import check_session_mfa
from bastion.testing import AuthFixture, make_auth, new_public_key
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.types.trust import RoleMapping, TrustedCluster, TrustedClusterSpec


class Dialer:
    def __init__(self, root: AuthFixture) -> None:
        self.root = root

    async def validate(self, proxy_addr: str, ca_pin: str, body: ValidateTrust) -> TrustAnswer:
        return await validate_leaf(self.root.auth, body, "127.0.0.1:1")


def _trust(token: str, enabled: bool = True) -> TrustedCluster:
    return TrustedCluster(
        metadata=Metadata(name="root.test"),
        spec=TrustedClusterSpec(
            enabled=enabled,
            proxy_addr="127.0.0.1:3080",
            token=token,
            ca_pin="sha256:00",
            role_map=[RoleMapping(remote="^access$", local=["access"])],
        ),
    )


async def _user_cert(fx: AuthFixture, roles: list[str]) -> bytes:
    role_list = [await fx.auth.roles.get(r) for r in roles]
    traits = {"logins": ["alice"]}
    ident = fx.auth.issuer.user_identity(
        cluster=fx.auth.cluster,
        user="alice",
        roles=roles,
        traits=traits,
        role_set=RoleSet.from_roles(role_list, traits),
        requested_ttl=timedelta(hours=1),
    )
    _, pub = new_public_key()
    certs = await fx.auth.issuer.issue_user(ident, pub, "local")
    return x509.load_pem_x509_certificate(certs.tls_cert.encode()).public_bytes(
        serialization.Encoding.DER
    )


async def _pair() -> tuple[AuthFixture, AuthFixture, TrustService]:
    root = await make_auth(cluster="root.test")
    leaf = await make_auth(cluster="leaf.test")
    trust = TrustService(leaf.auth, Dialer(root))
    trust.register()
    token = await root.auth.add_token(["trusted_cluster"], timedelta(minutes=5), {}, "admin")
    await leaf.auth.create_resource(_trust(token.token), "admin", force=False)
    return root, leaf, trust


async def test_trust_is_established_and_roles_mapped() -> None:
    root, leaf, trust = await _pair()
    stored = await trust.store.get("root.test")
    assert stored.spec.token == "" and stored.spec.status.root_cas is not None
    remote = await root.auth.store("remote_cluster").get("leaf.test")
    assert remote.spec.cas.cluster == "leaf.test"
    ident = await trust.remote_identity(await _user_cert(root, ["access"]))
    assert ident.user == "root.test/alice" and ident.cluster == "leaf.test"
    assert ident.roles == ("access",) and ident.origin_cluster == "root.test"
    assert "alice" in ident.logins
    with pytest.raises(AccessDenied, match="maps to"):
        await trust.remote_identity(await _user_cert(root, ["editor"]))


async def test_token_is_single_use_and_typed() -> None:
    root, leaf, _ = await _pair()
    node_token = await root.auth.add_token(["node"], timedelta(minutes=5), {}, "admin")
    with pytest.raises(AccessDenied):
        await leaf.auth.create_resource(_trust(node_token.token), "admin", force=True)
    with pytest.raises(AccessDenied):  # a trusted_cluster token never joins as a host
        tc = await root.auth.add_token(["trusted_cluster"], timedelta(minutes=5), {}, "admin")
        _, pub = new_public_key()
        await root.auth.join(tc.token, "h", "trusted_cluster", pub, [], [], "x")


async def test_suspension_and_deletion_refuse() -> None:
    root, leaf, trust = await _pair()
    cert = await _user_cert(root, ["access"])
    await leaf.auth.update_resource(_trust("", enabled=False), "admin")
    with pytest.raises(AccessDenied, match="suspended"):
        await trust.remote_identity(cert)
    await leaf.auth.delete_resource("trusted_cluster", "root.test", "admin")
    with pytest.raises(AccessDenied, match="not from a trusted root"):
        await trust.remote_identity(cert)
    types = (
        [e.type for e in await leaf.auth.audit.search_all()]
        if hasattr(leaf.auth.audit, "search_all")
        else []
    )
    assert types == [] or "trusted_cluster.delete" in types


async def test_leaf_cannot_sign_root_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compromised leaf signs a certificate claiming cluster=ROOT: the root refuses it, and
    the leaf itself never accepts its own name from the root's CA."""
    root, leaf, trust = await _pair()
    traits = {"logins": ["alice"]}
    forged = leaf.auth.issuer.user_identity(
        cluster="root.test",
        user="admin",
        roles=["editor"],
        traits=traits,
        role_set=RoleSet.from_roles([await leaf.auth.roles.get("editor")], traits),
        requested_ttl=timedelta(hours=1),
    )
    _, pub = new_public_key()
    with pytest.raises(BadParameter):  # an honest leaf's issuer refuses outright
        await leaf.auth.issuer.issue_user(forged, pub, "local")
    # A compromised leaf signs it anyway with its CA key (the check bypassed).
    monkeypatch.setattr(ca_x509, "_cluster_of", lambda _ca: "root.test")
    certs = await leaf.auth.issuer.issue_user(forged, pub, "local")
    monkeypatch.undo()
    der = x509.load_pem_x509_certificate(certs.tls_cert.encode()).public_bytes(
        serialization.Encoding.DER
    )
    user_ca = await root.auth.issuer.ca("tls_user")
    host_ca = await root.auth.issuer.ca("tls_host")
    with pytest.raises(AccessDenied):
        identity_from_peer(der, user_ca, host_ca, root.clock)


async def test_a_cluster_cannot_trust_itself() -> None:
    leaf = await make_auth(cluster="root.test")
    trust = TrustService(leaf.auth, None)
    trust.register()
    with pytest.raises(BadParameter, match="itself"):
        await leaf.auth.create_resource(_trust("t"), "admin", force=False)


async def _user_cert_with(fx: AuthFixture, **fields: object) -> bytes:
    role_list = [await fx.auth.roles.get("access")]
    traits = {"logins": ["alice"]}
    ident = fx.auth.issuer.user_identity(
        cluster=fx.auth.cluster,
        user="alice",
        roles=["access"],
        traits=traits,
        role_set=RoleSet.from_roles(role_list, traits),
        requested_ttl=timedelta(hours=1),
    ).model_copy(update=fields)
    _, pub = new_public_key()
    certs = await fx.auth.issuer.issue_user(ident, pub, "local")
    return x509.load_pem_x509_certificate(certs.tls_cert.encode()).public_bytes(
        serialization.Encoding.DER
    )


async def test_mfa_and_device_of_the_root_certificate_reach_the_leaf_policy() -> None:
    root, _, trust = await _pair()
    plain = await trust.remote_identity(await _user_cert(root, ["access"]))
    assert not plain.mfa_verified and not plain.device_id
    refused = check_session_mfa(plain, node_names=("web1",), login="alice", required=True)
    assert refused is not None and "MFA" in refused.message
    attested = await trust.remote_identity(
        await _user_cert_with(
            root,
            mfa_verified=True,
            mfa_device="key1",
            device_id="dev1",
            device_attestation="tpm",
            device_credential_id="cred1",
        )
    )
    assert attested.mfa_verified and attested.mfa_device == "key1"
    assert (attested.device_id, attested.device_attestation) == ("dev1", "tpm")


async def test_remote_heartbeat_is_recorded_and_never_recreates() -> None:
    root, _, _ = await _pair()
    service = TrustService(root.auth)
    service.register()
    now = root.auth.clock.now()
    await service.heartbeat_remote("leaf.test", "online", now)
    remote = await root.auth.store("remote_cluster").get("leaf.test")
    assert remote.spec.connection == "online" and remote.spec.last_heartbeat == now
    await service.heartbeat_remote("leaf.test", "offline", None)
    remote = await root.auth.store("remote_cluster").get("leaf.test")
    assert remote.spec.connection == "offline" and remote.spec.last_heartbeat == now
    await root.auth.delete_resource("remote_cluster", "leaf.test", "admin")
    await service.heartbeat_remote("leaf.test", "online", now)
    assert "leaf.test" not in [r.name for r in await service.remotes()]


async def test_root_ca_rotation_reaches_the_leaf_in_every_phase() -> None:
    root, _, trust = await _pair()
    pushed = TrustService(root.auth)
    assert not await trust.update_root_cas("root.test", await pushed.own_cas())  # unchanged
    for phase in ("init", "update", "standby"):
        await root.auth.rotate_ca("tls_user", phase, "admin")
        assert await trust.update_root_cas("root.test", await pushed.own_cas()), phase
        stored = (await trust.store.get("root.test")).spec.status.root_cas
        assert stored == await pushed.own_cas()
        # A root user certificate from the current signing key keeps working at the leaf.
        ident = await trust.remote_identity(await _user_cert(root, ["access"]))
        assert ident.user == "root.test/alice"
    with pytest.raises(AccessDenied, match="CAs of"):
        other = await make_auth(cluster="other.test")
        await trust.update_root_cas("root.test", await TrustService(other.auth).own_cas())


async def test_leaf_ca_rotation_reaches_the_root_in_every_phase() -> None:
    """The leaf's CAs pushed through its tunnel replace the root's copy in each phase; a tunnel
    certificate the leaf issues with its current signing key verifies against that copy."""
    root, leaf, trust = await _pair()
    at_root = TrustService(root.auth)
    assert not await at_root.update_leaf_cas("leaf.test", await trust.own_cas())  # unchanged
    first = await trust.tunnel_signing_key()
    for phase in ("init", "update", "standby"):
        await leaf.auth.rotate_ca("tls_host", phase, "admin")
        assert await at_root.update_leaf_cas("leaf.test", await trust.own_cas()), phase
        stored = (await root.auth.store("remote_cluster").get("leaf.test")).spec.cas
        assert stored == await trust.own_cas()
        assert (await trust.tunnel_signing_key() == first) == (phase == "init")
        cert_pem, _ = await trust.tunnel_certificate()
        anchors = x509.load_pem_x509_certificates(stored.tls_host_ca.encode())
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        found = ca_x509.verify_certificate_chain(cert, anchors, root.clock.now())
        assert (found.cluster, found.kind) == ("leaf.test", "host"), phase
    events = await root.auth.audit.search(AuditQuery(types=("remote_cluster.update",)))
    assert len(events) == 3 and all(e.user == "cluster/leaf.test" for e in events)
    with pytest.raises(AccessDenied, match="CAs of"):
        other = await make_auth(cluster="other.test")
        await at_root.update_leaf_cas("leaf.test", await TrustService(other.auth).own_cas())


def _host(fx: AuthFixture, role: str, host_id: str) -> Identity:
    return Identity(
        cluster=fx.auth.cluster,
        user=host_id,
        kind="host",
        roles=(role,),
        host_id=host_id,
        expires=fx.clock.now() + timedelta(hours=1),
    )


async def test_a_standalone_proxy_records_its_leaf_tunnels_through_the_guard() -> None:
    """RECORD_TUNNEL (GuardedAuth.record_tunnel): a proxy host certificate records a known
    leaf's status (last heartbeat never later than now) and the CAs it pushed, checked and
    audited as in the auth process; an unknown leaf, another cluster's CAs, a node or a user
    are refused and nothing is written."""
    root, leaf, trust = await _pair()
    proxy = await GuardedAuth.for_identity(
        root.auth, root.users, _host(root, "proxy", "host-p1"), "10.0.0.5"
    )
    now = root.clock.now()
    later = now + timedelta(hours=1)
    report = TunnelReport(leaf="leaf.test", connection="online", last_heartbeat=later)
    assert not await proxy.record_tunnel(report)
    stored = await root.auth.store("remote_cluster").get("leaf.test")
    assert stored.spec.connection == "online" and stored.spec.last_heartbeat == now
    # A proxy without a tunnel of that leaf (yet) does not flap a fresh "online".
    await proxy.record_tunnel(TunnelReport(leaf="leaf.test", connection="offline"))
    stored = await root.auth.store("remote_cluster").get("leaf.test")
    assert stored.spec.connection == "online"
    assert isinstance(root.clock, FakeClock)
    root.clock.advance(REMOTE_ONLINE_GRACE)  # nobody wrote online since: offline it is
    await proxy.record_tunnel(TunnelReport(leaf="leaf.test", connection="offline"))
    stored = await root.auth.store("remote_cluster").get("leaf.test")
    assert stored.spec.connection == "offline" and stored.spec.last_heartbeat == now
    await proxy.record_tunnel(report)
    await leaf.auth.rotate_ca("tls_host", "init", "admin")
    assert await proxy.record_tunnel(TunnelReport(leaf="leaf.test", cas=await trust.own_cas()))
    stored = await root.auth.store("remote_cluster").get("leaf.test")
    assert stored.spec.cas == await trust.own_cas()
    events = await root.auth.audit.search(AuditQuery(types=("remote_cluster.update",)))
    assert [e.user for e in events] == ["cluster/leaf.test"]
    with pytest.raises(NotFound):
        await proxy.record_tunnel(TunnelReport(leaf="unknown.test", connection="online"))
    assert "unknown.test" not in [r.name for r in await TrustService(root.auth).remotes()]
    other = await make_auth(cluster="other.test")
    with pytest.raises(AccessDenied, match="CAs of"):
        foreign = await TrustService(other.auth).own_cas()
        await proxy.record_tunnel(TunnelReport(leaf="leaf.test", cas=foreign))
    node = await GuardedAuth.for_identity(
        root.auth, root.users, _host(root, "node", "host-n1"), "10.0.0.6"
    )
    user = await GuardedAuth.for_identity(
        root.auth,
        root.users,
        root.auth.issuer.user_identity(
            cluster=root.auth.cluster,
            user="alice",
            roles=["editor"],
            traits={},
            role_set=RoleSet.from_roles([await root.auth.roles.get("editor")], {}),
            requested_ttl=timedelta(hours=1),
        ),
        "10.0.0.7",
    )
    for refused in (node, user):
        with pytest.raises(AccessDenied, match="reported by proxies"):
            await refused.record_tunnel(TunnelReport(leaf="leaf.test", connection="offline"))
    stored = await root.auth.store("remote_cluster").get("leaf.test")
    assert stored.spec.connection == "online"
