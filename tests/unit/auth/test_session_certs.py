"""Per-session MFA certificates: the real MFAService answered by the software authenticator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509

from bastion.audit.log import AuditQuery
from bastion.auth.session_certs import SessionCerts
from bastion.auth.trust import cluster_cas, leaf_session_mfa, remote_store
from bastion.ca.sshcert import identity_from_ssh_certificate, parse_ssh_certificate
from bastion.ca.x509 import identity_from_certificate
from bastion.errors import AccessDenied, ConnectionProblem, NotFound
from bastion.locks.matcher import Locked
from bastion.mfa.softkey import SoftwareAuthenticator
from bastion.rbac.checker import RoleSet
from bastion.rbac.session_mfa import SESSION_CERT_TTL, check_session_mfa
from bastion.testing import AuthFixture, make_auth, new_public_key
from bastion.types import Identity, Metadata, Node, load_resources
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.inventory import NodeSpec, ProxyServer, ProxyServerSpec
from bastion.types.trust import RemoteCluster, RemoteClusterSpec

ORIGIN = "https://127.0.0.1:3025"  # make_auth's public_url: the default origin and RP id
ROLES = """
kind: role
metadata: {name: prod}
spec:
  options: {require_session_mfa: true}
  allow: {logins: [root], node_labels: {env: prod}}
---
kind: role
metadata: {name: dev}
spec:
  allow: {logins: [root, alice], node_labels: {env: dev}}
"""


class Cluster:
    def __init__(self, fx: AuthFixture, key: SoftwareAuthenticator, device_id: str) -> None:
        self.fx = fx
        self.key = key
        self.device_id = device_id
        self.certs = SessionCerts(fx.auth, fx.auth.mfa)

    def identity(self, **kw: Any) -> Identity:
        fields: dict[str, Any] = {
            "cluster": "test.local",
            "user": "alice",
            "roles": ("prod", "dev"),
            "logins": ("root", "alice"),
            "expires": self.fx.clock.now() + timedelta(hours=8),
            "mfa_device": "login-device",
        }
        return Identity(**{**fields, **kw})

    async def role_set(self, identity: Identity) -> RoleSet:
        roles = [await self.fx.auth.roles.get(r) for r in identity.roles]
        return RoleSet.from_roles(roles, identity.traits)

    async def challenge(self, identity: Identity, node: str, login: str = "root") -> Any:
        rs = await self.role_set(identity)
        return await self.certs.challenge(identity, rs, node, login, "10.0.0.1")

    async def issue(
        self, identity: Identity, node: str, response: dict[str, Any], login: str = "root"
    ) -> Any:
        rs = await self.role_set(identity)
        _, pub = new_public_key()
        return await self.certs.issue(identity, rs, node, login, pub, response, "10.0.0.1")

    async def ceremony(self, identity: Identity, node: str, login: str = "root") -> Any:
        answer = await self.challenge(identity, node, login)
        return await self.issue(
            identity, node, self.key.get(answer["challenge"], ORIGIN), login=login
        )

    async def events(self) -> list[Any]:
        return await self.fx.auth.audit.search(AuditQuery(types=("mfa.session",)))

    async def refusals(self) -> list[Any]:
        """Refusals before any ceremony: ``access.denied`` (not ``mfa.session``) events."""
        return await self.fx.auth.audit.search(AuditQuery(types=("access.denied",)))


@pytest.fixture
async def c() -> Cluster:
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await fx.auth.prefs.update(pref)
    for role in load_resources(ROLES):
        await fx.auth.create_resource(role, "admin", force=False)
    for name, env in (("web1", "prod"), ("web2", "prod"), ("dev1", "dev"), ("hidden", "x")):
        await fx.auth.nodes.create(
            Node(
                metadata=Metadata(name=name, labels={"env": env}),
                spec=NodeSpec(hostname=name, host_id=f"h-{name}"),
            )
        )
    key = SoftwareAuthenticator()
    options = await fx.auth.mfa.begin_registration("alice")
    device = await fx.auth.mfa.finish_registration("alice", "key1", key.create(options, ORIGIN))
    return Cluster(fx, key, device.id)


async def test_no_challenge_where_mfa_is_not_required(c: Cluster) -> None:
    answer = await c.challenge(c.identity(), "dev1.test.local")
    assert answer == {
        "mfa_required": False,
        "node": "dev1",
        "login": "root",
        "port_forwarding": True,
    }


async def test_ceremony_issues_one_minute_certificates_for_one_target(c: Cluster) -> None:
    login_cert = c.identity()
    answer = await c.challenge(login_cert, "h-web1")  # any name the proxy accepts
    assert answer["mfa_required"] and answer["node"] == "web1"
    assert answer["scope"] == "session:web1:root"
    issued = await c.issue(login_cert, "web1", c.key.get(answer["challenge"], ORIGIN))
    ident = issued.identity
    now = c.fx.clock.now()
    assert ident.expires == now + SESSION_CERT_TTL
    assert ident.logins == ("root",) and ident.mfa_verified
    assert ident.mfa_scope == "session:web1:root" and ident.mfa_device == c.device_id
    assert ident.route is not None and (ident.route.node, ident.route.login) == ("web1", "root")
    assert (ident.roles, ident.traits, ident.user) == (
        login_cert.roles,
        login_cert.traits,
        login_cert.user,
    )
    ssh = parse_ssh_certificate(issued.ssh_cert)
    assert ssh.principals == ("root",)
    assert identity_from_ssh_certificate(ssh) == ident
    tls = identity_from_certificate(x509.load_pem_x509_certificate(issued.tls_cert.encode()))
    assert tls == ident
    assert check_session_mfa(ident, node_names=("web1",), login="root", required=True) is None
    assert check_session_mfa(ident, node_names=("web2",), login="root", required=True)
    [event] = await c.events()
    assert event.outcome == "success" and event.target == "web1" and event.login == "root"
    assert event.fields["mfa_device"] == c.device_id and event.fields["device_name"] == "key1"


async def test_never_outlives_the_login_certificate(c: Cluster) -> None:
    short = c.identity(expires=c.fx.clock.now() + timedelta(seconds=20))
    issued = await c.ceremony(short, "web1")
    assert issued.identity.expires == short.expires


async def test_assertion_for_node_a_does_not_buy_node_b(c: Cluster) -> None:
    ident = c.identity()
    answer = await c.challenge(ident, "web1")
    with pytest.raises(AccessDenied):
        await c.issue(ident, "web2", c.key.get(answer["challenge"], ORIGIN))
    [event] = await c.events()
    assert event.outcome == "failure" and event.target == "web2" and event.reason


async def test_assertion_for_another_login_is_refused(c: Cluster) -> None:
    ident = c.identity()
    answer = await c.challenge(ident, "dev1", login="alice")
    assert not answer["mfa_required"]
    prod = await c.challenge(ident, "web1")
    with pytest.raises(AccessDenied):  # RBAC: alice is not a login on prod nodes
        await c.issue(ident, "web1", c.key.get(prod["challenge"], ORIGIN), login="alice")


async def test_replayed_assertion_is_refused(c: Cluster) -> None:
    ident = c.identity()
    answer = await c.challenge(ident, "web1")
    response = c.key.get(answer["challenge"], ORIGIN)
    await c.issue(ident, "web1", response)
    with pytest.raises(AccessDenied):
        await c.issue(ident, "web1", response)


async def test_nothing_derives_from_a_session_certificate(c: Cluster) -> None:
    session = (await c.ceremony(c.identity(), "web1")).identity
    with pytest.raises(AccessDenied, match="cannot be used to get another certificate"):
        await c.challenge(session, "web1")
    refusals = await c.refusals()
    assert refusals[-1].outcome == "failure" and refusals[-1].fields["verb"] == "ssh"


@pytest.mark.parametrize(
    ("node", "login", "error"),
    [
        ("nope", "root", NotFound),
        ("hidden", "root", NotFound),  # exists, but invisible: the same answer
        ("web1", "postgres", AccessDenied),  # not in the certificate's logins
    ],
)
async def test_refusals_before_any_challenge(
    c: Cluster, node: str, login: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await c.challenge(c.identity(), node, login)
    [event] = await c.refusals()  # its own type: no MFA ceremony took place
    assert event.outcome == "failure" and event.target == node and event.login == login
    assert event.reason and await c.events() == []


async def test_cluster_wide_require_session_mfa(c: Cluster) -> None:
    pref = await c.fx.auth.auth_preference()
    pref.spec.require_session_mfa = True
    await c.fx.auth.prefs.update(pref)
    answer = await c.challenge(c.identity(), "dev1")
    assert answer["mfa_required"] and answer["scope"] == "session:dev1:root"


async def test_locked_mfa_device_gets_no_certificate(c: Cluster) -> None:
    await c.fx.auth.create_resource(
        Lock(
            metadata=Metadata(name="stolen-key"),
            spec=LockSpec(target=LockTarget(mfa_device=c.device_id), message="key reported lost"),
        ),
        "admin",
        force=False,
    )
    with pytest.raises(Locked, match="key reported lost"):
        await c.ceremony(c.identity(), "web1")
    event = (await c.events())[-1]
    assert event.outcome == "failure" and event.fields["mfa_device"] == c.device_id
    # the login device differs: a lock on the session's device does not touch the login cert
    other = await c.challenge(c.identity(), "dev1")
    assert other["mfa_required"] is False


async def test_rbac_refusal_is_opaque_to_the_client_and_detailed_in_audit(c: Cluster) -> None:
    with pytest.raises(AccessDenied) as info:
        await c.challenge(c.identity(), "web1", login="alice")
    assert info.value.message == "access denied to alice@web1"
    event = (await c.refusals())[-1]
    assert event.outcome == "failure" and 'login "alice"' in event.reason and "prod" in event.reason


async def test_user_without_a_security_key_is_told_how_to_get_one(c: Cluster) -> None:
    keyless = c.identity(user="bob")
    with pytest.raises(NotFound, match="bsh mfa add"):
        await c.challenge(keyless, "web1")
    event = (await c.events())[-1]
    assert event.outcome == "failure" and event.user == "bob"


async def test_an_offline_node_is_refused_before_any_ceremony(c: Cluster) -> None:
    now = c.fx.clock.now()
    await c.fx.auth.nodes.create(
        Node(
            metadata=Metadata(
                name="web9", labels={"env": "prod"}, expires=now + timedelta(minutes=1)
            ),
            spec=NodeSpec(hostname="web9", host_id="h-web9", tunnel=True),
        )
    )
    tunnels = {"h-web9": True}
    c.fx.auth.use_tunnel_presence(lambda host_id: tunnels.get(host_id, False), "")
    answer = await c.challenge(c.identity(), "web9")  # its tunnel is up: a ceremony starts
    assert answer["mfa_required"] and answer["challenge"]
    tunnels["h-web9"] = False  # the agent went away: no ceremony, a clear reason
    with pytest.raises(ConnectionProblem, match="node web9 is offline"):
        await c.challenge(c.identity(), "web9")
    assert await c.events() == [] and await c.refusals() == []
    assert c.fx.auth.node_online(await c.fx.auth.nodes.get("web1")) is None  # no heartbeat
    # A proxy in its own process heartbeats here: the agent may hold its tunnel there only, so
    # the missing tunnel in this process proves nothing; the heartbeat's freshness decides.
    standalone = ProxyServer(
        metadata=Metadata(name="p2", expires=now + timedelta(seconds=30)),
        spec=ProxyServerSpec(public_addr="127.0.0.1:3081"),
    )
    await c.fx.auth.heartbeat_proxy(standalone, "h-p2")
    assert c.fx.auth.node_online(await c.fx.auth.nodes.get("web9")) is True
    c.fx.clock.advance(timedelta(seconds=31))  # that proxy stopped heartbeating
    assert c.fx.auth.node_online(await c.fx.auth.nodes.get("web9")) is False


async def test_leaf_target_needs_a_recorded_leaf_then_scopes_to_it(c: Cluster) -> None:
    """Trusted clusters: the root knows the leaf, not its nodes; it always asks for the
    ceremony and scopes the certificate to ``session:<leaf>/<node>:<login>``."""
    login_cert = c.identity()
    rs = await c.role_set(login_cert)
    with pytest.raises(NotFound):
        await c.certs.challenge(login_cert, rs, "web9", "ubuntu", "10.0.0.1", cluster="leaf.x")
    cas = (await cluster_cas(c.fx.auth)).model_copy(update={"cluster": "leaf.x"})
    leaf = RemoteCluster(metadata=Metadata(name="leaf.x"), spec=RemoteClusterSpec(cas=cas))
    await remote_store(c.fx.auth).create(leaf)
    answer = await c.certs.challenge(login_cert, rs, "web9", "ubuntu", "10.0.0.1", cluster="leaf.x")
    assert answer["mfa_required"] and answer["scope"] == "session:leaf.x/web9:ubuntu"
    _, pub = new_public_key()
    issued = await c.certs.issue(
        login_cert,
        rs,
        "web9",
        "ubuntu",
        pub,
        c.key.get(answer["challenge"], ORIGIN),
        "10.0.0.1",
        cluster="leaf.x",
    )
    session = issued.identity
    assert session.mfa_verified and session.mfa_scope == "session:leaf.x/web9:ubuntu"
    assert session.logins == ("ubuntu",) and session.route is not None
    assert (session.route.cluster, session.route.node) == ("leaf.x", "web9")
    assert session.expires <= c.fx.clock.now() + SESSION_CERT_TTL
    # Useless on the root's own nodes, and on another leaf.
    assert check_session_mfa(session, node_names=("web9",), login="ubuntu", required=True)
    assert not leaf_session_mfa(session, "other.x", ("ubuntu",))["mfa_verified"]
    assert leaf_session_mfa(session, "leaf.x", ("ubuntu",))["mfa_verified"]
    [event] = await c.events()
    assert event.target == "leaf.x/web9" and event.fields["leaf_cluster"] == "leaf.x"
