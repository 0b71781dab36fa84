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


async def test_ttl_floor_never_goes_above_the_roles_cap():
    import json

    from bastion.types.access import Role

    fx = await make_auth()
    access = await fx.auth.roles.get("access")
    traits = {"logins": ["alice"]}

    def ttl(role: Role, requested: timedelta) -> timedelta:
        ident = fx.auth.issuer.user_identity(
            cluster="test.local",
            user="alice",
            roles=[role.metadata.name],
            traits=traits,
            role_set=RoleSet.from_roles([role], traits),
            requested_ttl=requested,
        )
        return ident.expires - fx.clock.now()

    assert ttl(access, timedelta(hours=2)) == timedelta(hours=2)  # min(requested, cap)
    assert ttl(access, timedelta(seconds=5)) == timedelta(minutes=1)  # the floor of a request
    # a role stored before caps under a minute were refused: its cap wins over the floor
    stored = access.model_dump(mode="json")
    stored["spec"]["options"]["max_session_ttl"] = "30s"
    legacy = Role.model_validate_json(json.dumps(stored))
    assert ttl(legacy, timedelta(hours=1)) == timedelta(seconds=30)
    assert ttl(legacy, timedelta(seconds=5)) == timedelta(seconds=30)


async def test_require_hardware_key_holds_for_every_issuance_of_the_roles_holders():
    """The issuer looks the option up in the identity's stored roles, so no caller can forget
    it: without an attestation of this very key as TPM-resident, no certificate."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from bastion.errors import AccessDenied
    from bastion.rbac.device_trust import KeyAttestation
    from bastion.types.access import Role

    fx = await make_auth()
    hw = Role.model_validate(
        {"metadata": {"name": "hw"}, "spec": {"options": {"require_hardware_key": True}}}
    )
    await fx.auth.create_resource(hw, "admin", force=False)
    roles = [await fx.auth.roles.get("access"), hw]
    ident = fx.auth.issuer.user_identity(
        cluster="test.local",
        user="alice",
        roles=["access", "hw"],
        traits={},
        role_set=RoleSet.from_roles(roles, {}),
        requested_ttl=timedelta(hours=1),
    )
    key, pub = new_public_key()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    spki = hashlib.sha256(der).hexdigest()
    with pytest.raises(AccessDenied, match="require_hardware_key"):
        await fx.auth.issuer.issue_user(ident, pub, "ip")
    software = KeyAttestation("d1", "software", certified_key_sha256=spki)
    with pytest.raises(AccessDenied, match="TPM"):
        await fx.auth.issuer.issue_user(ident, pub, "ip", key_attestation=software)
    other = KeyAttestation("d1", "tpm", device_key_sha256="ak", certified_key_sha256="f" * 64)
    with pytest.raises(AccessDenied, match="TPM"):
        await fx.auth.issuer.issue_user(ident, pub, "ip", key_attestation=other)
    tpm = KeyAttestation("d1", "tpm", device_key_sha256="ak", certified_key_sha256=spki)
    certs = await fx.auth.issuer.issue_user(ident, pub, "ip", key_attestation=tpm)
    assert certs.tls_cert
    # the SSH key attested, the TLS key a software one: the X.509 certificate is refused too
    _, software_tls = new_public_key()
    with pytest.raises(AccessDenied, match="TPM"):
        await fx.auth.issuer.issue_user(
            ident, software_tls, "ip", key_attestation=tpm, ssh_public_key=pub
        )
    plain = ident.model_copy(update={"roles": ("access",)})  # without the role: as before
    assert (await fx.auth.issuer.issue_user(plain, pub, "ip")).tls_cert


async def test_a_tpm_held_key_gets_both_certificates_and_the_identity_says_so():
    """``ssh_public_key``: the SSH certificate is for that key, the X.509 one for
    ``public_key``; ``key_attestation`` is ``tpm`` only when both are the attested key (bsh
    login --key-store=tpm sends its one TPM-held key as both), and it is the issuer's own
    verdict, never copied from the identity it was given (a renewal for another key loses it)."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bastion.ca.x509 import identity_from_certificate
    from bastion.rbac.device_trust import KeyAttestation

    fx = await make_auth()
    ident = fx.auth.issuer.user_identity(
        cluster="test.local",
        user="alice",
        roles=["access"],
        traits={},
        role_set=RoleSet.from_roles([await fx.auth.roles.get("access")], {}),
        requested_ttl=timedelta(hours=1),
    ).model_copy(update={"logins": ("root",)})
    _, tls_pub = new_public_key()
    held = ec.generate_private_key(ec.SECP256R1()).public_key()
    ssh_pub = held.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    spki = hashlib.sha256(
        held.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()
    tpm = KeyAttestation("d1", "tpm", certified_key_sha256=spki)
    certs = await fx.auth.issuer.issue_user(
        ident, tls_pub, "ip", key_attestation=tpm, ssh_public_key=ssh_pub
    )
    ssh_cert = parse_ssh_certificate(certs.ssh_cert)
    assert ssh_cert.public_key == held
    tls = x509.load_pem_x509_certificate(certs.tls_cert.encode())
    assert tls.public_key() == parse_public_key(tls_pub)
    # the X.509 certificate's key is a software one: the identity does not say tpm
    assert identity_from_ssh_certificate(ssh_cert).key_attestation == ""
    assert identity_from_certificate(tls).key_attestation == ""
    one = await fx.auth.issuer.issue_user(
        ident, ssh_pub, "ip", key_attestation=tpm, ssh_public_key=ssh_pub
    )
    assert parse_ssh_certificate(one.ssh_cert).public_key == held
    tls = x509.load_pem_x509_certificate(one.tls_cert.encode())
    assert tls.public_key() == held
    assert identity_from_certificate(tls).key_attestation == "tpm"
    assert identity_from_ssh_certificate(parse_ssh_certificate(one.ssh_cert)).key_attestation == (
        "tpm"
    )
    # a claim carried over from an earlier certificate does not survive another key
    renewed = await fx.auth.issuer.issue_user(one.identity, tls_pub, "ip")
    assert renewed.identity.key_attestation == ""


def test_a_presented_tpm_key_vouches_only_for_itself() -> None:
    """A database or app certificate asked for with a login certificate that says
    ``key_attestation: tpm``: that certificate's key (proved by the TLS handshake) is
    attested, nothing else is, and a certificate without the claim vouches for nothing."""
    from datetime import UTC, datetime

    from bastion.auth.issuer import Issuer
    from bastion.rbac.device_trust import hardware_key_refusal
    from bastion.types.identity import Identity

    later = datetime(2030, 1, 1, tzinfo=UTC)
    tpm = Identity(cluster="c", user="a", expires=later, device_id="d1", key_attestation="tpm")
    got = Issuer.presented_key_attestation(tpm, "ab" * 32)
    assert got is not None and hardware_key_refusal(True, "ab" * 32, got) is None
    assert hardware_key_refusal(True, "cd" * 32, got) is not None
    assert Issuer.presented_key_attestation(tpm, "") is None
    plain = tpm.model_copy(update={"key_attestation": ""})
    assert Issuer.presented_key_attestation(plain, "ab" * 32) is None
    no_device = tpm.model_copy(update={"device_id": ""})
    assert Issuer.presented_key_attestation(no_device, "ab" * 32) is None
