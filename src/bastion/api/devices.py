"""Routes of trusted devices (:mod:`bastion.contract.devices`).

Layer: api. Parsing, RBAC (``device`` rules) and serialising; the rules live in
:mod:`bastion.auth.devices`. Enrollment and the authentication ceremony are for any logged-in
user (the token, the TPM and the signature are the proof); the inventory needs ``device``
rules, except that a user may read a device they own or enrolled (``bsh device status``).
"""

from __future__ import annotations

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.api.binding import Call, bind
from bastion.auth.device_challenge import challenge_key, mint_challenge
from bastion.auth.device_sync import DeviceSync
from bastion.auth.devices import DeviceService, LoginProof
from bastion.auth.issuer import UserCerts
from bastion.auth.key_proof import KeyBinding
from bastion.auth.server import AuthServer
from bastion.contract import core
from bastion.contract import devices as d
from bastion.contract.base import Empty
from bastion.errors import AccessDenied, AuthenticationFailed, NotFound
from bastion.types.devices import Device, DeviceSpec
from bastion.types.identity import Identity

__all__ = ["add_device_routes", "key_binding", "login_proof", "ping_challenge"]


def _certs(certs: UserCerts) -> core.UserCerts:
    ident = certs.identity
    return core.UserCerts(
        user=ident.user,
        ssh_cert=certs.ssh_cert,
        tls_cert=certs.tls_cert,
        ssh_host_ca=list(certs.ssh_host_ca),
        tls_host_ca=certs.tls_host_ca,
        tls_user_ca=certs.tls_user_ca,
        expires=ident.expires.isoformat(),
        roles=list(ident.roles),
        logins=list(ident.logins),
        cluster=ident.cluster,
        mfa_device=ident.mfa_device,
    )


def _peer_public_key(request: web.Request) -> str:
    """PEM of the caller's certificate key: the ceremony re-issues for the same key."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        raise AuthenticationFailed("device authentication needs your login certificate")
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def ping_challenge(auth: AuthServer) -> str:
    """The ping's device challenge, for whoever logs in next (no state: a MAC'd token)."""
    return mint_challenge(challenge_key(auth.deps.kek), "", auth.clock.now())


def login_proof(proof: core.DeviceProof | None) -> LoginProof | None:
    """``Login.device`` for :meth:`UserService.login <bastion.auth.users.UserService.login>`:
    verified before the login's one issuance, which then carries the device (a refused proof:
    the login stands with ``device_error``)."""
    if proof is None:
        return None
    return LoginProof(
        device_id=proof.device_id,
        challenge=proof.challenge,
        signature=proof.signature,
        profile=dict(proof.profile),
        key_certification=(
            (cert.key_public, cert.attest, cert.signature)
            if (cert := proof.key_certification) is not None
            else None
        ),
    )


def key_binding(body: core.DeviceBound) -> KeyBinding:
    """The request's key material (``DeviceBound``) for
    :func:`~bastion.auth.key_proof.issue_bound`: the same for every endpoint that issues a
    user's login, renewal or per-session certificates."""
    return KeyBinding(device=login_proof(body.device), ssh_public_key=body.ssh_public_key)


def add_device_routes(app: web.Application, auth: AuthServer) -> None:
    """Register the device routes."""
    devices = DeviceService(auth)
    syncer = DeviceSync(auth)

    async def add(call: Call[d.AddDevice]) -> d.DeviceReply:
        await call.guard.require("device", "create")
        b = call.body
        device = await devices.add(b.asset_tag, b.os_type, b.owner, call.guard.ctx.actor)
        return d.DeviceReply(device=device)

    async def ls(call: Call[Empty]) -> d.DeviceList:
        await call.guard.require("device", "list")
        return d.DeviceList(items=await devices.list())

    async def get(call: Call[Empty]) -> d.DeviceReply:
        device = await devices.get(call.path("ref"))
        me = call.guard.ctx.actor
        if me not in (device.spec.owner, device.spec.enrolled_by):
            await call.guard.require("device", "read")
        return d.DeviceReply(device=device)

    async def rm(call: Call[Empty]) -> d.Removed:
        await call.guard.require("device", "delete")
        device = await devices.remove(call.path("ref"), call.guard.ctx.actor)
        return d.Removed(deleted=device.name)

    async def enroll_token(call: Call[d.EnrollTokenRequest]) -> d.EnrollToken:
        await call.guard.require("device", "update")
        new = await devices.create_enroll_token(
            call.path("ref"), call.body.ttl, call.guard.ctx.actor
        )
        expires = new.device.spec.enroll_token_expires
        return d.EnrollToken(
            token=new.token,
            device_id=new.device.name,
            expires=expires.isoformat() if expires else "",
        )

    async def compliance(call: Call[d.SetCompliance]) -> d.DeviceReply:
        await call.guard.require("device", "update")
        device = await devices.set_compliance(
            call.path("ref"), call.body.status, call.body.reason, call.guard.ctx.actor
        )
        return d.DeviceReply(device=device)

    def _user(identity: Identity) -> str:
        if identity.kind not in ("user", "bot"):
            raise AccessDenied("devices are enrolled and authenticated by users (log in first)")
        return identity.user

    async def enroll_begin(call: Call[d.EnrollBegin]) -> d.EnrollChallenge:
        b = call.body
        if not b.token:  # auto-enrollment of one's own device: a role must allow it
            await call.guard.require("device", "enroll")
        challenge = await devices.enroll_begin(
            _user(call.guard.ctx.identity),
            b.token,
            b.attestation,
            b.ek_public,
            b.ek_cert,
            b.ak_public,
            b.public_key,
            b.profile.model_dump(),
            call.remote,
        )
        return d.EnrollChallenge(
            session=challenge.session,
            attestation=challenge.attestation,
            credential_blob=challenge.credential_blob,
            encrypted_secret=challenge.encrypted_secret,
            nonce=challenge.nonce,
        )

    async def enroll_finish(call: Call[d.EnrollFinish]) -> d.DeviceReply:
        b = call.body
        device = await devices.enroll_finish(
            _user(call.guard.ctx.identity),
            b.session,
            b.secret,
            b.signature,
            call.remote,
        )
        return d.DeviceReply(device=device)

    async def authn_begin(call: Call[d.AuthnBegin]) -> d.AuthnChallenge:
        challenge, nonce = await devices.authn_challenge(
            call.guard.ctx.identity, call.body.device_id
        )
        return d.AuthnChallenge(challenge=challenge, nonce=nonce)

    async def authn_finish(call: Call[d.AuthnFinish]) -> core.UserCerts:
        b = call.body
        certs = await devices.authn_finish(
            call.guard.ctx.identity,
            b.challenge,
            b.signature,
            b.profile.model_dump(),
            _peer_public_key(call.request),
            call.remote,
            device_id=b.device_id,
        )
        return _certs(certs)

    async def for_gate(call: Call[d.DeviceLookup]) -> d.DeviceFound:
        ident = call.guard.ctx.identity
        if ident.kind != "host" or "proxy" not in ident.roles:
            raise AccessDenied("access denied: device records for the gate are for proxies")
        try:
            return d.DeviceFound(device=await devices.store.get(call.body.device_id))
        except NotFound:
            return d.DeviceFound(device=None)

    async def sync(call: Call[d.SyncRequest]) -> d.SyncReport:
        await call.guard.require("device", "update")
        if not call.body.dry_run:
            await call.guard.require("device", "create")
        name = call.path("name")
        plan = await syncer.sync(name, call.guard.ctx.actor, dry_run=call.body.dry_run)

        def row(
            device: Device | None, spec: DeviceSpec, changed: tuple[str, ...] = ()
        ) -> d.SyncChange:
            return d.SyncChange(
                asset_tag=spec.asset_tag,
                device_id=device.name if device else "",
                changed=list(changed),
                owner=spec.owner,
                compliance=spec.compliance.status,
            )

        return d.SyncReport(
            source=name,
            dry_run=call.body.dry_run,
            added=[row(None, spec) for spec in plan.added],
            updated=[row(dev, spec, changed) for dev, spec, changed in plan.updated],
            missing=[row(dev, spec, ("compliance",)) for dev, spec in plan.missing],
            missing_in_grace=[row(dev, dev.spec) for dev in plan.missing_in_grace],
            unchanged=len(plan.seen),
            errors=plan.errors[:200],
        )

    bind(app, d.DEVICES_ADD, add)
    bind(app, d.DEVICES_LS, ls)
    bind(app, d.DEVICES_GET, get)
    bind(app, d.DEVICES_RM, rm)
    bind(app, d.DEVICES_ENROLL_TOKEN, enroll_token)
    bind(app, d.DEVICES_COMPLIANCE, compliance)
    bind(app, d.DEVICE_ENROLL_BEGIN, enroll_begin)
    bind(app, d.DEVICE_ENROLL_FINISH, enroll_finish)
    bind(app, d.DEVICE_AUTHN_BEGIN, authn_begin)
    bind(app, d.DEVICE_AUTHN_FINISH, authn_finish)
    bind(app, d.DEVICE_FOR_GATE, for_gate)
    bind(app, d.DEVICE_SOURCE_SYNC, sync)
