from datetime import timedelta

import pytest

from bastion.auth.issuer import parse_public_key
from bastion.ca.sshcert import identity_from_ssh_certificate, parse_ssh_certificate
from bastion.errors import BadParameter
from bastion.rbac.checker import RoleSet
from bastion.testing import make_auth, new_public_key


async def test_user_certs_carry_the_same_identity_document():
    fx = await make_auth()
    roles = [await fx.auth.roles.get("access")]
    traits = {"logins": ["alice", "root"]}
    ident = fx.auth.issuer.user_identity(
        cluster="test.local",
        user="alice",
        roles=["access"],
        traits=traits,
        role_set=RoleSet.from_roles(roles, traits),
        requested_ttl=timedelta(hours=100),
    )
    assert ident.expires - fx.clock.now() == timedelta(hours=12)  # role max_session_ttl
    _, pub = new_public_key()
    certs = await fx.auth.issuer.issue_user(ident, pub, "1.2.3.4")
    ssh = parse_ssh_certificate(certs.ssh_cert)
    assert set(ssh.principals) == {"alice", "root"}
    assert identity_from_ssh_certificate(ssh) == ident


@pytest.mark.parametrize("text", ["", "ssh-ed25519 AAAA", "-----BEGIN PUBLIC KEY-----\nxx\n"])
def test_bad_public_keys_are_clear_errors(text):
    with pytest.raises(BadParameter, match="invalid public key"):
        parse_public_key(text)


async def test_every_issuance_is_logged_with_what_a_monitor_needs():
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from bastion.audit.log import AuditQuery

    fx = await make_auth()
    roles = [await fx.auth.roles.get("access")]
    traits = {"logins": ["alice"]}
    ident = fx.auth.issuer.user_identity(
        cluster="test.local",
        user="alice",
        roles=["access"],
        traits=traits,
        role_set=RoleSet.from_roles(roles, traits),
        requested_ttl=timedelta(hours=1),
    ).model_copy(update={"device_id": "dev-1", "mfa_verified": True, "mfa_device": "yubi"})
    key, pub = new_public_key()
    certs = await fx.auth.issuer.issue_user(ident, pub, "1.2.3.4")
    (event,) = await fx.auth.audit.search(AuditQuery(types=("cert.issued",)))
    f = event.fields
    assert (event.user, event.device_id, event.remote_addr) == ("alice", "dev-1", "1.2.3.4")
    assert f["serial"] == str(parse_ssh_certificate(certs.ssh_cert).serial)
    assert (f["cert_type"], f["identity_kind"], f["key_id"]) == ("user", "user", "alice")
    assert f["principals"] == ["alice"] and f["roles"] == ["access"] and f["ssh"] is True
    assert f["ttl_seconds"] == 3600 and f["expires"] == ident.expires.isoformat()
    assert f["mfa_verified"] is True and f["mfa_device"] == "yubi"
    der = parse_public_key(pub).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert f["public_key_sha256"] == hashlib.sha256(der).hexdigest()
    assert key is not None
