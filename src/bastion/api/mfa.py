"""API routes for MFA: WebAuthn and passwordless login (public), device management and
challenges (mTLS, the caller's own devices).

Public (rate-limited like ``/v1/login``)::

    POST /v1/login/begin               {user, password} -> {totp, webauthn: options | null}
    POST /v1/login/passwordless/begin  {} -> {webauthn: options}
    POST /v1/login/passwordless        {webauthn, public_key, ttl} -> certificates
    POST /v1/invites/webauthn          {token} -> {webauthn: registration options}

Authenticated (a user certificate; hosts and the local admin identity own no devices)::

    GET  /v1/mfa/devices                 -> {devices: [...]}
    POST /v1/mfa/devices/begin           {type: webauthn|totp, passwordless} -> options / secret
    POST /v1/mfa/devices/finish          {type, name, webauthn | enrolment+code, proof}
    POST /v1/mfa/devices/{name}/remove   {proof}
    POST /v1/mfa/challenge               {scope} -> {webauthn: options}

``proof`` is ``{"webauthn": assertion}`` for scope ``mfa:add`` / ``mfa:remove:<name>``, or
``{"otp": code}``; it is required once the user has a device (see
:meth:`bastion.mfa.service.MFAService.confirm_with_existing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.api.devices import key_binding
from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.contract import mfa as m
from bastion.contract.base import Empty
from bastion.contract.core import UserCerts as CertsReply
from bastion.errors import BadParameter

__all__ = ["add_mfa_routes"]


def _caller(call: Call[Any]) -> str:
    identity = call.guard.ctx.identity
    if identity.kind != "user" or identity.mfa_scope:
        raise BadParameter(
            "MFA devices belong to users: log in with bsh login (not a host, admin or "
            "per-session certificate)"
        )
    return str(identity.user)


def _registrant(call: Call[Any]) -> str:
    """:func:`_caller`, for adding a device: SSO users own none (their IdP does the strong
    authentication, docs/sso.md). A first device needs no proof, so a stolen SSO certificate
    could otherwise register the thief's key and pass per-session and admin MFA with it."""
    user = _caller(call)
    if "sso_connector" in call.guard.ctx.identity.traits:
        raise BadParameter(
            "SSO users have no Bastion MFA devices: your identity provider does the strong "
            "authentication"
        )
    return user


def _device_change_scope(scope: str) -> str:
    """The scope a user may ask a challenge for here: a device-change proof only.

    Session and admin challenges come from their own endpoints, which first check that the
    caller may ask for them.
    """
    if scope != "mfa:add" and not scope.startswith("mfa:remove:"):
        raise BadParameter("scope must be mfa:add or mfa:remove:<device name>")
    return scope


def add_mfa_routes(
    app: web.Application,
    auth: AuthServer,
    users: UserService,
    certs_reply: Callable[[UserCerts], CertsReply],
) -> None:
    """Register the routes above; ``certs_reply`` renders certificates like ``/v1/login``."""
    mfa = auth.mfa

    async def login_begin(call: Call[m.LoginBegin]) -> m.LoginChallenge:
        challenge = await users.begin_login(call.body.user, call.body.password, call.remote)
        return m.LoginChallenge(totp=challenge.totp, webauthn=challenge.webauthn)

    async def passwordless_begin(call: Call[Empty]) -> m.WebAuthnOptions:
        return m.WebAuthnOptions(webauthn=await mfa.begin_challenge(None, "login"))

    async def passwordless(call: Call[m.Passwordless]) -> CertsReply:
        b = call.body
        certs = await users.login_passwordless(
            b.webauthn, b.public_key, b.ttl, call.remote, binding=key_binding(b)
        )
        return certs_reply(certs)

    async def invite_webauthn(call: Call[m.InviteWebAuthn]) -> m.WebAuthnOptions:
        options = await users.invite_webauthn_options(call.body.token, call.remote)
        return m.WebAuthnOptions(webauthn=options)

    async def list_devices(call: Call[Empty]) -> m.Devices:
        devices = await mfa.list_devices(_caller(call))
        return m.Devices.model_validate({"devices": [d.summary() for d in devices]})

    async def begin_add(call: Call[m.AddBegin]) -> m.AddOptions:
        user = _registrant(call)
        if call.body.type == "totp":
            enrolment = await mfa.begin_totp(user)
            return m.AddOptions(
                totp=m.TOTPEnrolment(
                    enrolment=enrolment.enrolment, secret=enrolment.secret, uri=enrolment.uri
                )
            )
        options = await mfa.begin_registration(user, passwordless=call.body.passwordless)
        return m.AddOptions(webauthn=options)

    async def _confirm(call: Call[Any], user: str, proof: m.Proof, scope: str) -> None:
        await mfa.confirm_change(user, scope, proof.webauthn, proof.otp, call.remote)

    async def finish_add(call: Call[m.AddFinish]) -> m.Device:
        user = _registrant(call)
        b = call.body
        await _confirm(call, user, b.proof, "mfa:add")
        if b.type == "totp":
            device = await mfa.finish_totp(user, b.name, b.enrolment, b.code, call.remote)
        else:
            device = await mfa.finish_registration(user, b.name, b.webauthn or {}, call.remote)
        return m.Device.model_validate(device.summary())

    async def remove(call: Call[m.Remove]) -> m.Removed:
        user = _caller(call)
        name = call.path("name")
        await _confirm(call, user, call.body.proof, f"mfa:remove:{name}")
        await mfa.remove_device(user, name, user, call.remote)
        return m.Removed(removed=name)

    async def challenge(call: Call[m.ChallengeScope]) -> m.WebAuthnOptions:
        user = _caller(call)
        scope = _device_change_scope(call.body.scope)
        return m.WebAuthnOptions(webauthn=await mfa.begin_challenge(user, scope))

    bind(app, m.LOGIN_BEGIN, login_begin)
    bind(app, m.PASSWORDLESS_BEGIN, passwordless_begin)
    bind(app, m.PASSWORDLESS, passwordless)
    bind(app, m.INVITE_WEBAUTHN, invite_webauthn)
    bind(app, m.LIST_DEVICES, list_devices)
    bind(app, m.ADD_DEVICE_BEGIN, begin_add)
    bind(app, m.ADD_DEVICE_FINISH, finish_add)
    bind(app, m.REMOVE_DEVICE, remove)
    bind(app, m.DEVICE_CHALLENGE, challenge)
