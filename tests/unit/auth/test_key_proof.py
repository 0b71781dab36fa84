"""The device ceremony and TPM-held keys at every endpoint that issues a user's certificates
(pure: memory backend, fake clock; the TPM's structures made in software as a TPM would).

The endpoints are enumerated from the contract: every one whose request is ``DeviceBound``
must have a flow here, and every flow, driven through its auth service exactly as its route
does (:func:`bastion.api.devices.key_binding`), must refuse a software key under
``require_hardware_key``, accept the key the device's AK certified over the request's device
challenge (``key_attestation: tpm``, the device in the certificate), and refuse a
certification made over another challenge. Certificate endpoints that take no key material
are listed with the reason."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.api.devices import key_binding, ping_challenge
from bastion.auth.device_attest import authn_message, enroll_message
from bastion.auth.devices import DeviceService
from bastion.auth.issuer import UserCerts
from bastion.auth.key_proof import KeyBinding, binding_from_json, binding_json, check_binding
from bastion.auth.renewal import RenewalService
from bastion.auth.requests import AccessRequestService, NewRequest
from bastion.auth.session_certs import SessionCerts
from bastion.auth.trust import TrustService
from bastion.ca.sshcert import parse_ssh_certificate
from bastion.contract import ENDPOINTS
from bastion.contract.core import DeviceBound, Login
from bastion.errors import AccessDenied, BadParameter
from bastion.mfa.softkey import SoftwareAuthenticator
from bastion.rbac.checker import RoleSet
from bastion.sso.mapping import SSOIdentity
from bastion.sso.service import SSOService
from bastion.testing import AuthFixture, make_auth, new_public_key
from bastion.testing.tpm_structs import b64 as _b64
from bastion.testing.tpm_structs import certify
from bastion.testing.tpm_structs import public_pem as _pem
from bastion.testing.tpm_structs import tpm_signature as _tpm_sign
from bastion.types import Identity, Metadata, Node, load_resources
from bastion.types.codec import parse_resource
from bastion.types.inventory import NodeSpec

PASSWORD = "correct horse battery staple"
ORIGIN = "https://127.0.0.1:3025"  # make_auth's public_url: the WebAuthn origin
PROFILE = {k: "" for k in ("os_name", "os_version", "kernel", "model", "serial", "hostname")}
PROFILE["bsh_version"] = ""
ROLES = """
kind: role
metadata: {name: hw}
spec:
  options: {require_hardware_key: true, require_session_mfa: true}
  allow: {logins: [root], node_labels: {env: prod}, request: {roles: [dba]}}
---
kind: role
metadata: {name: dba}
spec:
  allow: {logins: [postgres], node_labels: {env: prod}}
---
kind: role
metadata: {name: reviewer}
spec:
  allow: {review_requests: {roles: [dba]}}
"""
HARDWARE = "key-store=tpm"  # in the refusal's hint


def _certify(
    ak: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey, challenge: str
) -> dict[str, str]:
    """TPM2_Certify of ``key`` by ``ak`` over SHA-256 of ``challenge``."""
    public, attest, signature = certify(ak, key, hashlib.sha256(challenge.encode()).digest())
    return {"key_public": public, "attest": attest, "signature": signature}


def _line(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


@dataclass
class World:
    fx: AuthFixture
    device_id: str
    ak: ec.EllipticCurvePrivateKey
    passkey: SoftwareAuthenticator
    sso: SSOService
    invites: int = 0

    def binding(
        self, held: ec.EllipticCurvePrivateKey | None, *, other: bool = False
    ) -> KeyBinding:
        """The request's ``DeviceBound`` fields as bsh sends them, through the route's
        converter: the device proof over a fresh ping challenge and, with ``held``, that key
        certified (``other``: over another challenge)."""
        challenge = ping_challenge(self.fx.auth)
        message = authn_message(self.fx.auth.cluster, challenge, b"", PROFILE)
        proof: dict[str, Any] = {
            "device_id": self.device_id,
            "challenge": challenge,
            "signature": _tpm_sign(self.ak, message),
        }
        fields: dict[str, Any] = {"device": proof}
        if held is not None:
            proof["key_certification"] = _certify(
                self.ak, held, "another challenge" if other else challenge
            )
            fields["ssh_public_key"] = _line(held)
        body = Login.model_validate(
            {"user": "x", "password": "x", "public_key": "x", **fields}
        )  # any DeviceBound body: the fields and their conversion are shared
        return key_binding(body)


async def _world() -> World:
    """alice (role ``hw``: require_hardware_key), a passkey, and her TPM-enrolled device (a
    software key stands in for the AK, signing TPM-format signatures)."""
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.device_trust.allow_software = True
    pref.spec.allow_software_authenticator = True
    await fx.auth.prefs.update(pref)
    for role in load_resources(ROLES):
        await fx.auth.create_resource(role, "admin", force=False)
    await fx.auth.nodes.create(
        Node(
            metadata=Metadata(name="web1", labels={"env": "prod"}),
            spec=NodeSpec(hostname="web1", host_id="h-web1"),
        )
    )
    devices = DeviceService(fx.auth)
    device = await devices.add("SN-1", "linux", "alice", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    ak = ec.generate_private_key(ec.SECP256R1())
    begin = await devices.enroll_begin("alice", token, "software", "", "", "", _pem(ak), {}, "r")
    message = enroll_message(fx.auth.cluster, begin.session, base64.b64decode(begin.nonce))
    await devices.enroll_finish(
        "alice", begin.session, "", _b64(ak.sign(message, ec.ECDSA(hashes.SHA256()))), "r"
    )

    def as_tpm(current):  # type: ignore[no-untyped-def]
        current.spec.credential.attestation = "tpm"
        return current

    await devices.store.modify(device.name, as_tpm)
    invite = await fx.users.add_user("alice", ["access"], ["root"], {}, "admin")
    info = await fx.users.start_invite(invite.token)
    _, pub = new_public_key()
    code = pyotp.TOTP(info.otp_secret).at(fx.clock.now())
    await fx.users.complete_invite(invite.token, PASSWORD, code, pub, timedelta(hours=1), "ip")
    passkey = SoftwareAuthenticator()
    options = await fx.auth.mfa.begin_registration("alice", passwordless=True)
    await fx.auth.mfa.finish_registration("alice", "passkey", passkey.create(options, ORIGIN))

    def roles(user):  # type: ignore[no-untyped-def]
        user.spec.roles = ["hw"]
        return user

    await fx.auth.users.modify("alice", roles)
    connector = parse_resource(
        {
            "kind": "oidc",
            "metadata": {"name": "okta"},
            "spec": {
                "issuer_url": "https://idp.example.com",
                "client_id": "bastion",
                "client_secret": "cs",
                "claims_to_roles": [{"claim": "groups", "value": "ops", "roles": ["hw"]}],
            },
        }
    )
    await fx.auth.create_resource(connector, "admin", force=False)
    sso = SSOService(fx.auth, lambda certs: {"user": certs.identity.user})
    return World(fx, device.name, ak, passkey, sso)


def _alice(w: World) -> Identity:
    return Identity(
        cluster=w.fx.auth.cluster,
        user="alice",
        roles=("hw",),
        logins=("root",),
        expires=w.fx.clock.now() + timedelta(hours=8),
    )


Flow = Callable[[World, str, KeyBinding], Awaitable[UserCerts]]
TTL = timedelta(hours=1)


async def _password(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    begun = await w.fx.users.begin_login("alice", PASSWORD, "ip")
    assert begun.webauthn is not None
    return await w.fx.users.login(
        "alice",
        PASSWORD,
        "",
        pub,
        TTL,
        "ip",
        webauthn=w.passkey.get(begun.webauthn, ORIGIN),
        device=binding.device,
        ssh_public_key=binding.ssh_public_key,
    )


async def _invite(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    w.invites += 1
    invite = await w.fx.users.add_user(f"bob{w.invites}", ["hw"], ["root"], {}, "admin")
    info = await w.fx.users.start_invite(invite.token)
    code = pyotp.TOTP(info.otp_secret).at(w.fx.clock.now())
    return await w.fx.users.complete_invite(
        invite.token, PASSWORD, code, pub, TTL, "ip", binding=binding
    )


async def _passwordless(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    options = await w.fx.auth.mfa.begin_challenge(None, "login")
    return await w.fx.users.login_passwordless(
        w.passkey.get(options, ORIGIN), pub, TTL, "ip", binding=binding
    )


async def _sso(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    """The request keeps the binding (stored as JSON) until the IdP answers."""
    request = await w.sso.create_request("okta", pub, TTL, "s" * 40, "", "ip", binding=binding)
    stored = await w.sso.requests.get(request.id)
    connector = await w.sso.connector("okta")
    who = SSOIdentity("okta", "oidc", "https://idp", "sub-1", "alice", {"groups": ["ops"]})
    certs, _ = await w.sso._issue(connector, who, stored, "ip")
    return certs


async def _renew(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    return await RenewalService(w.fx.auth).renew(_alice(w), pub, TTL, "ip", binding=binding)


async def _session(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    ident = _alice(w)
    role_set = RoleSet.from_roles([await w.fx.auth.roles.get("hw")], {})
    certs = SessionCerts(w.fx.auth, w.fx.auth.mfa)
    answer = await certs.challenge(ident, role_set, "web1", "root", "ip")
    response = w.passkey.get(answer["challenge"], ORIGIN)
    return await certs.issue(ident, role_set, "web1", "root", pub, response, "ip", binding=binding)


async def _assume(w: World, pub: str, binding: KeyBinding) -> UserCerts:
    """An approved access request's certificates, assumed with the current login."""
    requests = AccessRequestService(w.fx.auth)
    request = await requests.create("alice", NewRequest(roles=("dba",)))
    bob = Identity(
        cluster=w.fx.auth.cluster, user="bob", roles=("reviewer",), expires=_alice(w).expires
    )
    await requests.review(request.name, bob, "approve", "ok")
    return await requests.assume(request.name, _alice(w), pub, TTL, "ip", binding)


FLOWS: dict[str, Flow] = {
    "/v1/login": _password,
    "/v1/invites/complete": _invite,
    "/v1/login/passwordless": _passwordless,
    "/v1/sso/requests": _sso,
    "/v1/certs/renew": _renew,
    "/v1/certs/session": _session,
    "/v1/access-requests/{id}/assume": _assume,
}
NO_KEY_MATERIAL = {
    "/v1/join": "host certificates",
    "/v1/ca/sign-host": "host certificates",
    "/v1/bots/join": "bots have no device (require_hardware_key refuses them)",
    "/v1/sso/requests/{id}/result": "hands out what /v1/sso/requests' login issued",
    "/v1/device-authn/finish": "re-issues the caller's certificate key after its ceremony; "
    "bsh sends the proof with the request instead",
}


def _issues_user_certificates(endpoint: Any) -> bool:
    fields = getattr(endpoint.response, "model_fields", {})
    return "ssh_cert" in fields or "tls_cert" in fields


def test_every_certificate_endpoint_takes_the_key_material_or_says_why_not() -> None:
    bound = {e.path for e in ENDPOINTS if issubclass(e.body, DeviceBound)}
    assert bound == set(FLOWS)  # a new DeviceBound endpoint needs its flow below
    issuing = {e.path for e in ENDPOINTS if _issues_user_certificates(e)}
    assert issuing - {"/v1/sso/requests"} <= bound | set(NO_KEY_MATERIAL)
    assert set(NO_KEY_MATERIAL) <= issuing  # no stale exemption


@pytest.mark.parametrize("path", sorted(FLOWS))
async def test_every_endpoint_honours_require_hardware_key(path: str) -> None:
    w = await _world()
    flow = FLOWS[path]
    software, held = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    with pytest.raises(AccessDenied, match=HARDWARE):  # a software key, no device
        await flow(w, _line(software), KeyBinding())
    with pytest.raises(AccessDenied, match=HARDWARE):  # the ceremony, but a software key
        await flow(w, _line(software), w.binding(None))
    with pytest.raises(AccessDenied, match="stale or foreign"):  # over another challenge
        await flow(w, _line(held), w.binding(held, other=True))
    certs = await flow(w, _line(held), w.binding(held))  # the TPM key the AK certified
    assert certs.identity.key_attestation == "tpm"
    assert certs.identity.device_id == w.device_id and certs.identity.device_attestation == "tpm"
    assert parse_ssh_certificate(certs.ssh_cert).public_key == held.public_key()


async def test_a_replayed_proof_is_refused_and_the_request_gets_no_device() -> None:
    w = await _world()
    held = ec.generate_private_key(ec.SECP256R1())
    binding = w.binding(held)
    await _renew(w, _line(held), binding)
    with pytest.raises(AccessDenied, match="proof was refused.*already used"):
        await _renew(w, _line(held), binding)
    software = ec.generate_private_key(ec.SECP256R1())
    assert binding.device is not None  # replayed, without the key: the renewal stands
    proof_only = KeyBinding(device=dataclasses.replace(binding.device, key_certification=None))
    role = await w.fx.auth.roles.get("hw")
    role.spec.options.require_hardware_key = False
    await w.fx.auth.roles.update(role)
    certs = await _renew(w, _line(software), proof_only)
    assert certs.device_error and not certs.identity.device_id
    assert certs.identity.key_attestation == ""


def test_binding_shape_and_json_round_trip() -> None:
    with pytest.raises(BadParameter, match="key_certification"):
        check_binding(KeyBinding(ssh_public_key=_line(ec.generate_private_key(ec.SECP256R1()))))
    assert binding_from_json(binding_json(KeyBinding())) == KeyBinding()


async def test_the_sso_request_keeps_the_binding_as_json() -> None:
    w = await _world()
    held = ec.generate_private_key(ec.SECP256R1())
    binding = w.binding(held)
    assert binding_from_json(binding_json(binding)) == binding


async def test_a_leaf_takes_the_roots_key_attestation_for_the_root_certificates_key() -> None:
    """Leaf certificates: the root's ``key_attestation: tpm`` (its issuer writes it only when
    the AK certified the X.509 key too) vouches for the root certificate's key."""
    from cryptography import x509

    w = await _world()
    held = ec.generate_private_key(ec.SECP256R1())
    root = await _renew(w, _line(held), w.binding(held))
    der = x509.load_pem_x509_certificate(root.tls_cert.encode()).public_bytes(
        serialization.Encoding.DER
    )
    trust = TrustService(w.fx.auth)
    leaf = _alice(w).model_copy(update={"origin_cluster": "root", "user": "root:alice"})
    with pytest.raises(AccessDenied, match=HARDWARE):  # the root did not attest it
        await trust.issue_remote(leaf, der, "ip")
    attested = leaf.model_copy(update={"key_attestation": "tpm", "device_id": w.device_id})
    certs = await trust.issue_remote(attested, der, "ip")
    assert certs.identity.key_attestation == "tpm"
