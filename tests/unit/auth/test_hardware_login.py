"""``bsh login --key-store=tpm`` at auth (pure: memory backend, fake clock, the TPM's
structures made in software as a TPM would): the password login carries the device proof
and the AK's TPM2_Certify of the SSH key; the SSH certificate goes to that key, the identity
says ``key_attestation: tpm``, and ``require_hardware_key`` lets it through while refusing a
software key, another key, a certification over another challenge, and a software device."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.api.devices import ping_challenge
from bastion.audit.log import AuditQuery
from bastion.auth.device_attest import authn_message, enroll_message
from bastion.auth.devices import DeviceService, LoginProof
from bastion.ca.sshcert import parse_ssh_certificate
from bastion.errors import AccessDenied, BadParameter
from bastion.testing import make_auth, new_public_key
from bastion.testing.tpm_structs import b64 as _b64
from bastion.testing.tpm_structs import certify
from bastion.testing.tpm_structs import public_pem as _pem
from bastion.testing.tpm_structs import tpm_signature as _tpm_sign
from bastion.types.access import Role

PASSWORD = "correct horse battery staple"
PROFILE = {k: "" for k in ("os_name", "os_version", "kernel", "model", "serial", "hostname")}
PROFILE["bsh_version"] = ""


def _certify(
    ak: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey, challenge: str
) -> tuple[str, str, str]:
    return certify(ak, key, hashlib.sha256(challenge.encode()).digest())


def _ssh_line(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


async def _world(attestation: str = "tpm"):  # type: ignore[no-untyped-def]
    """alice (password + TOTP, role ``hw`` with require_hardware_key) and her device, whose
    credential is the AK (a software key standing in for the TPM's)."""
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.device_trust.allow_software = True
    await fx.auth.prefs.update(pref)
    devices = DeviceService(fx.auth)
    device = await devices.add("SN-1", "linux", "alice", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    ak = ec.generate_private_key(ec.SECP256R1())
    begin = await devices.enroll_begin("alice", token, "software", "", "", "", _pem(ak), {}, "r")
    message = enroll_message(fx.auth.cluster, begin.session, base64.b64decode(begin.nonce))
    sig = _b64(ak.sign(message, ec.ECDSA(hashes.SHA256())))
    await devices.enroll_finish("alice", begin.session, "", sig, "r")

    def as_tpm(current):  # type: ignore[no-untyped-def]
        current.spec.credential.attestation = attestation
        return current

    await devices.store.modify(device.name, as_tpm)
    invite = await fx.users.add_user("alice", ["access"], ["root"], {}, "admin")
    info = await fx.users.start_invite(invite.token)
    _, pub = new_public_key()
    code = pyotp.TOTP(info.otp_secret).at(fx.clock.now())
    await fx.users.complete_invite(invite.token, PASSWORD, code, pub, timedelta(hours=1), "ip")
    hw = Role.model_validate(
        {
            "metadata": {"name": "hw"},
            "spec": {"options": {"require_hardware_key": True}, "allow": {"logins": ["root"]}},
        }
    )
    await fx.auth.create_resource(hw, "admin", force=False)

    def roles(user):  # type: ignore[no-untyped-def]
        user.spec.roles = ["hw"]
        return user

    await fx.auth.users.modify("alice", roles)
    return fx, device.name, ak, info.otp_secret


async def _login(  # type: ignore[no-untyped-def]
    fx, device_id, ak, secret, *, held=None, certified=None, other=False, software=False,
    split_tls=False,
):  # fmt: skip
    fx.clock.advance(60)  # a fresh TOTP step
    challenge = ping_challenge(fx.auth)
    message = authn_message(fx.auth.cluster, challenge, b"", PROFILE)
    if software:
        proof_sig = _b64(ak.sign(message, ec.ECDSA(hashes.SHA256())))
    else:
        proof_sig = _tpm_sign(ak, message)
    certification = None
    if certified is not None:
        certification = _certify(ak, certified, "another" if other else challenge)
    proof = LoginProof(device_id, challenge, proof_sig, {}, key_certification=certification)
    # bsh sends its one TPM-held key for both certificates (split_tls: an older bsh's
    # software TLS key next to it)
    tls_pub = _ssh_line(held) if held is not None and not split_tls else new_public_key()[1]
    code = pyotp.TOTP(secret).at(fx.clock.now())
    return await fx.users.login(
        "alice",
        PASSWORD,
        code,
        tls_pub,
        timedelta(hours=1),
        "ip",
        device=proof,
        ssh_public_key=_ssh_line(held) if held is not None else "",
    )


async def test_a_tpm_certified_ssh_key_passes_require_hardware_key() -> None:
    fx, device_id, ak, secret = await _world()
    held = ec.generate_private_key(ec.SECP256R1())
    certs = await _login(fx, device_id, ak, secret, held=held, certified=held)
    assert certs.identity.key_attestation == "tpm" and certs.identity.device_id == device_id
    ssh = parse_ssh_certificate(certs.ssh_cert)
    assert ssh.public_key == held.public_key()


async def test_what_is_not_a_certified_tpm_key_is_refused() -> None:
    fx, device_id, ak, secret = await _world()
    held, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AccessDenied, match="key-store=tpm"):  # a software key
        await _login(fx, device_id, ak, secret)
    with pytest.raises(AccessDenied, match="key-store=tpm"):  # the AK certified another key
        await _login(fx, device_id, ak, secret, held=held, certified=other)
    with pytest.raises(AccessDenied, match="stale or foreign"):  # over another challenge
        await _login(fx, device_id, ak, secret, held=held, certified=held, other=True)
    forger = ec.generate_private_key(ec.SECP256R1())  # another TPM's AK
    with pytest.raises(AccessDenied, match="key attestation"):
        await _login(fx, device_id, forger, secret, held=held, certified=held)
    with pytest.raises(BadParameter, match="key_certification"):  # a key without proof
        await _login(fx, device_id, ak, secret, held=held)
    with pytest.raises(AccessDenied, match="key-store=tpm"):  # the X.509 key a software one
        await _login(fx, device_id, ak, secret, held=held, certified=held, split_tls=True)
    failures = await fx.auth.audit.search(AuditQuery(types=("user.login",), outcome="failure"))
    assert len(failures) == 5  # every refusal of a key audited (the bad request is not a login)


async def test_a_software_device_never_vouches() -> None:
    fx, device_id, ak, secret = await _world(attestation="software")
    held = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AccessDenied, match="software-attested"):
        await _login(fx, device_id, ak, secret, held=held, certified=held, software=True)
