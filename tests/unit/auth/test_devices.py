"""DeviceService with software keys (pure: memory backend, fake clock): enrollment, the
ceremony, a replayed challenge, a reused or expired token, software keys refused by default,
malformed TPM structures."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth.device_attest import (
    authn_message,
    enroll_message,
    parse_ak,
    parse_ek,
    verify_signature,
)
from bastion.auth.devices import DeviceService
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, BadParameter
from bastion.types.identity import Identity


async def _world(allow_software: bool = True) -> tuple[AuthServer, DeviceService]:
    clock = FakeClock()
    auth = AuthServer(
        AuthDeps(backend=MemoryBackend(clock), clock=clock, cluster="t.local", kek=b"\x01" * 32)
    )
    await auth.init()
    pref = await auth.auth_preference()
    pref.spec.device_trust.allow_software = allow_software
    await auth.prefs.update(pref)
    return auth, DeviceService(auth)


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()


async def _enrolled(devices: DeviceService) -> tuple[str, ec.EllipticCurvePrivateKey, str]:
    device = await devices.add("SN-1", "linux", "alice", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    key = ec.generate_private_key(ec.SECP256R1())
    begin = await devices.enroll_begin(
        "alice", token, "software", "", "", "", _pem(key), {"os_version": "12"}, "r"
    )
    message = enroll_message("t.local", begin.session, base64.b64decode(begin.nonce))
    done = await devices.enroll_finish("alice", begin.session, "", _sign(key, message), "r")
    assert done.spec.enroll_status == "enrolled" and done.spec.credential is not None
    return device.name, key, token


def _identity(auth: AuthServer) -> Identity:
    return Identity(cluster="t.local", user="alice", expires=auth.clock.now() + timedelta(hours=1))


async def test_enroll_authn_and_replay() -> None:
    auth, devices = await _world()
    device_id, key, token = await _enrolled(devices)
    with pytest.raises(AccessDenied, match="already used"):
        await devices.enroll_begin("alice", token, "software", "", "", "", _pem(key), None, "r")
    identity = _identity(auth)
    challenge, nonce = await devices.authn_challenge(identity, device_id)
    profile = {"os_version": "12", "hostname": "laptop"}
    full = {**{k: "" for k in ("os_name", "kernel", "model", "serial", "bsh_version")}, **profile}
    message = authn_message("t.local", challenge, base64.b64decode(nonce), full)
    signature = _sign(key, message)
    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    pub = subject.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    certs = await devices.authn_finish(identity, challenge, signature, profile, pub, "r")
    assert certs.identity.device_id == device_id
    assert certs.identity.device_attestation == "software"
    assert certs.identity.device_asset_tag == "SN-1"
    with pytest.raises(AccessDenied, match="unknown, expired or already used"):
        await devices.authn_finish(identity, challenge, signature, profile, pub, "r")


async def test_foreign_signature_and_expired_token() -> None:
    auth, devices = await _world()
    device_id, _, _ = await _enrolled(devices)
    identity = _identity(auth)
    challenge, _ = await devices.authn_challenge(identity, device_id)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AccessDenied, match="does not verify"):
        await devices.authn_finish(identity, challenge, _sign(other, b"x"), {}, "", "r")
    second = await devices.add("SN-2", "linux", "", "admin")
    token = (await devices.create_enroll_token(second.name, timedelta(minutes=5), "a")).token
    auth.clock.advance(timedelta(minutes=6))  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied, match="invalid, expired"):
        await devices.enroll_begin("bob", token, "software", "", "", "", _pem(other), None, "r")


async def test_software_keys_refused_unless_allowed() -> None:
    _, devices = await _world(allow_software=False)
    device = await devices.add("SN-3", "macos", "", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AccessDenied, match="only TPM-attested"):
        await devices.enroll_begin("bob", token, "software", "", "", "", _pem(key), None, "r")


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_tpm_structures_fail_cleanly(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    for parse in (parse_ak, parse_ek):
        try:
            parse(text)
        except BadParameter:
            pass
    assert verify_signature("not pem", "tpm", b"m", text) is False


async def test_non_compliance_carries_a_device_lock_and_renewal_drops_the_device() -> None:
    from bastion.types.devices import compliance_lock_name

    auth, devices = await _world()
    device_id, _, _ = await _enrolled(devices)
    lock_name = compliance_lock_name(device_id)
    await devices.set_compliance(device_id, "non_compliant", "disk", "admin")
    lock = await auth.locks.get(lock_name)
    assert lock.spec.target.device == device_id and "non-compliant: disk" in lock.spec.message
    identity = _identity(auth).model_copy(
        update={"device_id": device_id, "device_credential_id": "x", "device_asset_tag": "SN-1"}
    )
    dropped = await devices.recheck(identity, "r")
    assert dropped.device_id == "" and dropped.device_asset_tag == ""
    await devices.set_compliance(device_id, "compliant", "", "admin")
    assert lock_name not in {lock.name for lock in await auth.locks.list()}


async def test_auto_enrollment_of_ones_own_inventory_device() -> None:
    auth, devices = await _world()
    await devices.add("SN-9", "linux", "alice", "admin")
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AccessDenied, match="not registered to you"):
        await devices.enroll_begin(
            "bob", "", "software", "", "", "", _pem(key), {"serial": "SN-9"}, "r"
        )
    with pytest.raises(AccessDenied, match="no device with serial"):
        await devices.enroll_begin(
            "alice", "", "software", "", "", "", _pem(key), {"serial": "X"}, "r"
        )
    begin = await devices.enroll_begin(
        "alice", "", "software", "", "", "", _pem(key), {"serial": "SN-9"}, "r"
    )
    message = enroll_message("t.local", begin.session, base64.b64decode(begin.nonce))
    done = await devices.enroll_finish("alice", begin.session, "", _sign(key, message), "r")
    assert done.spec.enroll_status == "enrolled"


async def test_cached_device_trust_reads_the_cache_and_fails_closed() -> None:
    from bastion.auth.devices import cached_device_trust
    from bastion.errors import ConnectionProblem
    from bastion.services.cache import ResourceCache
    from bastion.types.identity import Identity as _Identity

    cache = ResourceCache()
    asked: list[str] = []

    async def fetch(device_id: str) -> None:
        asked.append(device_id)
        return None

    check = cached_device_trust(cache, fetch)
    who = _Identity(
        cluster="c",
        user="u",
        roles=("r",),
        device_id="d1",
        expires=FakeClock().now() + timedelta(hours=1),
    )
    with pytest.raises(ConnectionProblem):
        await check.refusal(who)
    cache.apply({"type": "init"})
    assert await check.refusal(who) is None and not asked  # mode off: no lookup
    pref = {"kind": "cluster_auth_preference", "metadata": {"name": "cluster-auth-preference"}}
    pref["spec"] = {"device_trust": {"mode": "required"}}
    cache.apply({"type": "put", "kind": "cluster_auth_preference", "resource": pref})
    refused = await check.refusal(who)
    assert refused is not None and "not in the inventory" in refused.reason and asked == ["d1"]
