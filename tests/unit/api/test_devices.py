from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.devices import add_device_routes
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.contract import devices as d


def test_routes_are_bound() -> None:
    clock = FakeClock()
    auth = AuthServer(AuthDeps(MemoryBackend(clock), clock, "t.local", b"\x01" * 32))
    app = web.Application()
    add_device_routes(app, auth)
    assert d.DEVICES_LS.key in bound_endpoints(app)
    assert d.DEVICE_AUTHN_FINISH.key in bound_endpoints(app)


async def test_the_proof_in_the_login_request() -> None:
    """``Login.device``: the ping's challenge (for any user) answered with the login request;
    a refused proof leaves the login standing with ``device_error``."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from bastion.api.app import user_certs
    from bastion.api.devices import login_with_device, ping_challenge
    from bastion.auth.device_attest import authn_message, enroll_message
    from bastion.auth.devices import DeviceService
    from bastion.contract.core import DeviceProof
    from bastion.types.identity import Identity

    clock = FakeClock()
    auth = AuthServer(AuthDeps(MemoryBackend(clock), clock, "t.local", b"\x01" * 32))
    await auth.init()
    pref = await auth.auth_preference()
    pref.spec.device_trust.allow_software = True
    await auth.prefs.update(pref)
    devices = DeviceService(auth)
    device = await devices.add("SN-1", "linux", "alice", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    begin = await devices.enroll_begin("alice", token, "software", "", "", "", pem.decode(), {}, "")
    message = enroll_message("t.local", begin.session, base64.b64decode(begin.nonce))
    sig = base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()
    await devices.enroll_finish("alice", begin.session, "", sig, "")

    identity = Identity(cluster="t.local", user="alice", expires=clock.now() + timedelta(hours=1))
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    certs = await auth.issuer.issue_user(identity, public, "")
    challenge = ping_challenge(auth)
    profile = {k: "" for k in ("os_name", "os_version", "kernel", "model", "serial")}
    profile |= {"hostname": "", "bsh_version": ""}
    signed = key.sign(authn_message("t.local", challenge, b"", profile), ec.ECDSA(hashes.SHA256()))
    proof = DeviceProof(
        device_id=device.name,
        challenge=challenge,
        signature=base64.b64encode(signed).decode(),
        profile=profile,
    )
    reply = await login_with_device(auth, certs, user_certs(certs), proof, public, "r")
    assert not reply.device_error and reply.tls_cert != certs.tls_cert
    again = await login_with_device(auth, certs, user_certs(certs), proof, public, "r")
    assert "already used" in again.device_error and again.tls_cert == certs.tls_cert
