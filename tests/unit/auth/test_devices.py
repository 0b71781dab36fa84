"""DeviceService with software keys (pure: memory backend, fake clock): enrollment, the
ceremony, a replayed challenge, a reused or expired token, software keys refused by default,
malformed TPM structures."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC

from bastion.audit.log import AuditQuery
from bastion.auth.device_attest import (
    AK_REQUIRED,
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

TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")


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


async def test_one_round_trip_with_the_login_challenge() -> None:
    """The challenge that came with the login's certificates: answered once, by its user,
    before it expires."""
    auth, devices = await _world()
    device_id, key, _ = await _enrolled(devices)
    identity = _identity(auth)
    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    pub = subject.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    login = await auth.issuer.issue_user(identity, pub, "r")
    challenge = login.device_challenge
    assert challenge.startswith("dc1.")
    full = {k: "" for k in ("os_name", "os_version", "kernel", "model", "serial", "hostname")}
    full["bsh_version"] = ""
    signature = _sign(key, authn_message("t.local", challenge, b"", full))
    certs = await devices.authn_finish(
        identity, challenge, signature, {}, pub, "r", device_id=device_id
    )
    assert certs.identity.device_id == device_id
    with pytest.raises(AccessDenied, match="already used"):  # a replay
        await devices.authn_finish(
            identity, challenge, signature, {}, pub, "r", device_id=device_id
        )
    # Another user's challenge, an expired one, a forged one: refused, audited.
    bob = identity.model_copy(update={"user": "bob"})
    fresh = (await auth.issuer.issue_user(identity, pub, "r")).device_challenge
    signature = _sign(key, authn_message("t.local", fresh, b"", full))
    with pytest.raises(AccessDenied, match="unknown, expired or foreign"):
        await devices.authn_finish(bob, fresh, signature, {}, pub, "r", device_id=device_id)
    forged = fresh[:-2] + ("AA" if not fresh.endswith("AA") else "BB")
    with pytest.raises(AccessDenied, match="unknown, expired or foreign"):
        await devices.authn_finish(identity, forged, signature, {}, pub, "r", device_id=device_id)
    auth.clock.advance(timedelta(minutes=3))  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied, match="unknown, expired or foreign"):
        await devices.authn_finish(identity, fresh, signature, {}, pub, "r", device_id=device_id)
    failures = await auth.audit.search(AuditQuery(types=("device.authn",), outcome="failure"))
    assert len(failures) == 4


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


# ---- EK certificates against the manufacturer CA bundle ----------------------------------------


def _tpm_keys() -> tuple[str, str, rsa.RSAPrivateKey]:
    """(EK, AK) as base64 TPM2B_PUBLICs made in software, and the EK's private key."""
    ek_key = rsa.generate_private_key(65537, 2048)
    ek = TPM2B_PUBLIC.from_pem(
        ek_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        objectAttributes=TPMA_OBJECT.DECRYPT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.FIXEDTPM,
    )
    sym = ek.publicArea.parameters.rsaDetail.symmetric
    sym.algorithm, sym.keyBits.aes, sym.mode.aes = TPM2_ALG.AES, 128, TPM2_ALG.CFB
    ak = TPM2B_PUBLIC.from_pem(
        _pem(ec.generate_private_key(ec.SECP256R1())).encode(), objectAttributes=AK_REQUIRED
    )
    ak.publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG.ECDSA
    ak.publicArea.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
    ak.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    enc = base64.b64encode
    return enc(bytes(ek.marshal())).decode(), enc(bytes(ak.marshal())).decode(), ek_key


def _root_and_ek_cert(ek_key: rsa.RSAPrivateKey, now: datetime) -> tuple[str, str]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vendor TPM Root")])
    base = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .issuer_name(name)
    )
    root = (
        base.subject_name(name)
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        base.subject_name(x509.Name([]))
        .public_key(ek_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DirectoryName(x509.Name([x509.NameAttribute(TPM_MANUFACTURER, "id:1")]))]
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return root.public_bytes(pem).decode(), leaf.public_bytes(pem).decode()


async def test_ek_certificate_must_chain_to_the_bundle_when_set() -> None:
    auth, devices = await _world()
    ek, ak, ek_key = _tpm_keys()
    root, cert = _root_and_ek_cert(ek_key, auth.clock.now())
    other_root, other_cert = _root_and_ek_cert(ek_key, auth.clock.now())
    pref = await auth.auth_preference()
    pref.spec.device_trust.ek_ca_bundle = root
    await auth.prefs.update(pref)

    async def begin(ek_cert: str) -> object:
        device = await devices.add(f"SN-{len(await devices.list())}", "linux", "alice", "admin")
        token = (await devices.create_enroll_token(device.name, None, "admin")).token
        return await devices.enroll_begin("alice", token, "tpm", ek, ek_cert, ak, "", {}, "r")

    with pytest.raises(AccessDenied, match="this TPM sent none"):
        await begin("")
    with pytest.raises(AccessDenied, match="no chain to a trusted manufacturer CA"):
        await begin(other_cert)
    challenge = await begin(cert)
    assert getattr(challenge, "credential_blob", "")
    query = AuditQuery(types=("device.enroll",), outcome="failure")
    failures = await auth.audit.search(query)
    assert len(failures) == 2 and "manufacturer" in str(failures[-1]), failures
    # Not set: the certificate (any issuer) is only checked to be for the EK.
    pref = await auth.auth_preference()
    pref.spec.device_trust.ek_ca_bundle = ""
    await auth.prefs.update(pref)
    assert getattr(await begin(other_cert), "credential_blob", "")
    assert other_root.startswith("-----BEGIN CERTIFICATE-----")
