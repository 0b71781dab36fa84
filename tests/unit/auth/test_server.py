from datetime import timedelta

import pytest

from bastion.auth.server import AuthDeps, AuthServer
from bastion.ca.sshcert import parse_ssh_certificate
from bastion.errors import AccessDenied, AlreadyExists, BadParameter, CompareFailed, NotFound
from bastion.testing import make_auth, new_public_key
from bastion.types import load_resources

ROLE = """
kind: role
metadata: {name: dev}
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {env: [staging, '^dev-.*$']}
"""


async def test_init_creates_everything_once():
    fx = await make_auth()
    assert await fx.auth.init() == []
    for ca_type in ("ssh_user", "ssh_host", "tls_user", "tls_host", "db", "jwt"):
        ca = await fx.auth.issuer.ca(ca_type)
        assert ca.spec.active_keys and ca.spec.active_keys[0].private_key_encrypted
    assert {r.name for r in await fx.auth.roles.list()} == {"access", "editor", "auditor"}


async def test_init_refuses_a_backend_of_another_cluster():
    fx = await make_auth(cluster="one")
    other = AuthServer(
        AuthDeps(backend=fx.backend, clock=fx.clock, cluster="two", kek=b"\x01" * 32)
    )
    # CA names include the cluster, so the other cluster creates its own CAs ...
    await other.init()
    assert (await other.issuer.ca("ssh_user")).spec.cluster == "two"


async def test_create_then_second_create_fails_and_force_overwrites():
    fx = await make_auth()
    role = load_resources(ROLE)[0]
    created = await fx.auth.create_resource(role, "admin", force=False)
    assert created.metadata.revision
    with pytest.raises(AlreadyExists, match='role "dev" already exists'):
        await fx.auth.create_resource(role, "admin", force=False)
    await fx.auth.create_resource(role, "admin", force=True)


async def test_update_with_stale_revision_is_refused():
    fx = await make_auth()
    await fx.auth.create_resource(load_resources(ROLE)[0], "admin", force=False)
    first = await fx.auth.roles.get("dev")
    second = await fx.auth.roles.get("dev")
    first.spec.allow.logins = ["root"]
    await fx.auth.update_resource(first, "admin")
    second.spec.allow.logins = ["ubuntu"]
    with pytest.raises(CompareFailed, match="changed by someone else"):
        await fx.auth.update_resource(second, "admin")
    assert (await fx.auth.roles.get("dev")).spec.allow.logins == ["root"]


async def test_cert_authorities_cannot_be_created_or_deleted_by_hand():
    fx = await make_auth()
    ca = await fx.auth.issuer.ca("ssh_user")
    with pytest.raises(BadParameter, match="rotate"):
        await fx.auth.create_resource(ca, "admin", force=True)
    with pytest.raises(BadParameter, match="rotate"):
        await fx.auth.delete_resource("cert_authority", ca.name, "admin")


async def test_builtin_role_in_use_cannot_be_deleted():
    fx = await make_auth()
    await fx.users.add_user("alice", ["access"], [], {}, "admin")
    with pytest.raises(BadParameter, match="assigned to alice"):
        await fx.auth.delete_resource("role", "access", "admin")


async def test_join_token_single_use_and_role_checked():
    fx = await make_auth()
    new = await fx.auth.add_token(["node"], timedelta(minutes=30), {"env": "prod"}, "admin")
    assert new.token not in new.resource.model_dump_json()  # only the hash is stored
    _, pub = new_public_key()
    with pytest.raises(AccessDenied, match="does not allow joining as 'db'"):
        await fx.auth.join(new.token, "n1", "db", pub, [], [], "1.1.1.1")
    certs = await fx.auth.join(new.token, "n1", "node", pub, [], ["10.0.0.5"], "1.1.1.1")
    cert = parse_ssh_certificate(certs.ssh_cert)
    assert cert.cert_type == "host"
    assert {"n1", "n1.test.local", "10.0.0.5", certs.identity.host_id} <= set(cert.principals)
    with pytest.raises(AccessDenied, match="already used"):
        await fx.auth.join(new.token, "n2", "node", pub, [], [], "1.1.1.1")


@pytest.mark.parametrize(
    ("roles", "labels", "message"),
    [
        (["bogus"], {}, "token: roles: unknown join role 'bogus': use node"),
        ([], {}, "token: roles: at least one role is required"),
        (["node"], {"env": 1}, "token: labels.env: Input should be a valid string"),
    ],
)
async def test_bad_token_request_is_a_clear_error_not_an_internal_one(roles, labels, message):
    fx = await make_auth()
    with pytest.raises(BadParameter, match=message):
        await fx.auth.add_token(roles, timedelta(minutes=30), labels, "admin")


@pytest.mark.parametrize("token", ["", "forged-token", "x" * 200])
async def test_forged_tokens_are_refused_and_audited(token):
    fx = await make_auth()
    await fx.auth.add_token(["node"], timedelta(minutes=30), {}, "admin")
    _, pub = new_public_key()
    with pytest.raises(AccessDenied):
        await fx.auth.join(token, "evil", "node", pub, [], [], "6.6.6.6")
    events = await fx.auth.audit.search(
        __import__("bastion.audit.log").audit.log.AuditQuery(types=("join",), outcome="failure")
    )
    assert events and events[-1].remote_addr == "6.6.6.6"


async def test_expired_token_is_refused():
    fx = await make_auth()
    new = await fx.auth.add_token(["node"], timedelta(minutes=30), {}, "admin")
    fx.clock.advance(timedelta(minutes=31))
    _, pub = new_public_key()
    with pytest.raises(AccessDenied):
        await fx.auth.join(new.token, "n1", "node", pub, [], [], "ip")


async def test_rotation_phases_keep_old_key_trusted_until_standby():
    fx = await make_auth()
    original = (await fx.auth.issuer.ca("ssh_user")).spec.active_keys[0].id
    ca = await fx.auth.rotate_ca("ssh_user", "init", "admin")
    assert ca.spec.active_keys[0].id == original
    new_id = ca.spec.additional_trusted_keys[0].id
    ca = await fx.auth.rotate_ca("ssh_user", "update", "admin")
    assert ca.spec.active_keys[0].id == new_id
    assert [k.id for k in ca.spec.additional_trusted_keys] == [original]
    ca = await fx.auth.rotate_ca("ssh_user", "standby", "admin")
    assert [k.id for k in ca.spec.trusted_keys()] == [new_id]
    with pytest.raises(BadParameter):
        await fx.auth.rotate_ca("ssh_user", "update", "admin")


async def test_export_formats():
    fx = await make_auth()
    user = await fx.auth.export_ca("ssh_user")
    assert user.startswith("ssh-ed25519 ")
    host = await fx.auth.export_ca("ssh_host")
    assert host.startswith("@cert-authority ")
    assert "BEGIN CERTIFICATE" in await fx.auth.export_ca("tls_user")


async def test_unknown_resource_is_not_found():
    fx = await make_auth()
    with pytest.raises(NotFound, match='role "nope" not found'):
        await fx.auth.delete_resource("role", "nope", "admin")
