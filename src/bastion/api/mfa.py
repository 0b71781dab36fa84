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

from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.errors import BadParameter
from bastion.types.duration import parse_duration
from bastion.web.body import read_json

__all__ = ["PUBLIC_MFA_PATHS", "add_mfa_routes"]

PUBLIC_MFA_PATHS = frozenset(
    {
        "/v1/login/begin",
        "/v1/login/passwordless/begin",
        "/v1/login/passwordless",
        "/v1/invites/webauthn",
    }
)


def _obj(body: dict[str, Any], name: str, required: bool = True) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise BadParameter(f"field {name!r} must be a WebAuthn credential (JSON object)")
    return value


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadParameter(f"field {name!r} is required and must be a string")
    return value


def _caller(request: web.Request) -> str:
    identity = request["guard"].ctx.identity
    if identity.kind != "user" or identity.mfa_scope:
        raise BadParameter(
            "MFA devices belong to users: log in with bsh login (not a host, admin or "
            "per-session certificate)"
        )
    return str(identity.user)


def _registrant(request: web.Request) -> str:
    """:func:`_caller`, for adding a device: SSO users own none (their IdP does the strong
    authentication, docs/sso.md). A first device needs no proof, so a stolen SSO certificate
    could otherwise register the thief's key and pass per-session and admin MFA with it."""
    user = _caller(request)
    if "sso_connector" in request["guard"].ctx.identity.traits:
        raise BadParameter(
            "SSO users have no Bastion MFA devices: your identity provider does the strong "
            "authentication"
        )
    return user


def _device_change_scope(body: dict[str, Any]) -> str:
    """The scope a user may ask a challenge for here: a device-change proof only.

    Session and admin challenges come from their own endpoints, which first check that the
    caller may ask for them.
    """
    scope = _text(body, "scope")
    if scope != "mfa:add" and not scope.startswith("mfa:remove:"):
        raise BadParameter("scope must be mfa:add or mfa:remove:<device name>")
    return scope


def add_mfa_routes(
    app: web.Application,
    auth: AuthServer,
    users: UserService,
    certs_json: Callable[[UserCerts], dict[str, Any]],
) -> None:
    """Register the routes above; ``certs_json`` renders certificates like ``/v1/login``."""
    mfa = auth.mfa

    async def login_begin(request: web.Request) -> web.Response:
        body = await read_json(request)
        challenge = await users.begin_login(
            _text(body, "user"), _text(body, "password"), request.remote or ""
        )
        return web.json_response({"totp": challenge.totp, "webauthn": challenge.webauthn})

    async def passwordless_begin(request: web.Request) -> web.Response:
        return web.json_response({"webauthn": await mfa.begin_challenge(None, "login")})

    async def passwordless(request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            ttl = parse_duration(_text(body, "ttl", "12h"))
        except ValueError as exc:
            raise BadParameter(f"field 'ttl': {exc}") from None
        certs = await users.login_passwordless(
            _obj(body, "webauthn") or {},
            _text(body, "public_key"),
            ttl,
            request.remote or "",
        )
        return web.json_response(certs_json(certs))

    async def invite_webauthn(request: web.Request) -> web.Response:
        body = await read_json(request)
        options = await users.invite_webauthn_options(_text(body, "token"), request.remote or "")
        return web.json_response({"webauthn": options})

    async def list_devices(request: web.Request) -> web.Response:
        devices = await mfa.list_devices(_caller(request))
        return web.json_response({"devices": [d.summary() for d in devices]})

    async def begin_add(request: web.Request) -> web.Response:
        user = _registrant(request)
        body = await read_json(request)
        kind = _text(body, "type", "webauthn")
        if kind == "totp":
            enrolment = await mfa.begin_totp(user)
            return web.json_response(
                {
                    "totp": {
                        "enrolment": enrolment.enrolment,
                        "secret": enrolment.secret,
                        "uri": enrolment.uri,
                    }
                }
            )
        if kind != "webauthn":
            raise BadParameter("type must be webauthn or totp")
        options = await mfa.begin_registration(user, passwordless=bool(body.get("passwordless")))
        return web.json_response({"webauthn": options})

    async def _confirm(request: web.Request, user: str, body: dict[str, Any], scope: str) -> None:
        proof = body.get("proof") or {}
        if not isinstance(proof, dict):
            raise BadParameter("field 'proof' must be an object")
        try:
            await mfa.confirm_with_existing(
                user, scope, _obj(proof, "webauthn", required=False), str(proof.get("otp") or "")
            )
        except Exception as exc:
            await auth.audit.emit(
                "mfa.add" if scope == "mfa:add" else "mfa.remove",
                outcome="failure",
                user=user,
                target=f"user/{user}",
                remote_addr=request.remote or "",
                reason=f"no valid confirmation with an existing device: {exc}",
            )
            raise

    async def finish_add(request: web.Request) -> web.Response:
        user = _registrant(request)
        body = await read_json(request)
        await _confirm(request, user, body, "mfa:add")
        name = _text(body, "name")
        remote = request.remote or ""
        if _text(body, "type", "webauthn") == "totp":
            device = await mfa.finish_totp(
                user, name, _text(body, "enrolment"), _text(body, "code"), remote
            )
        else:
            device = await mfa.finish_registration(user, name, _obj(body, "webauthn") or {}, remote)
        return web.json_response(device.summary(), status=201)

    async def remove(request: web.Request) -> web.Response:
        user = _caller(request)
        name = request.match_info["name"]
        body = await read_json(request)
        await _confirm(request, user, body, f"mfa:remove:{name}")
        await mfa.remove_device(user, name, user, request.remote or "")
        return web.json_response({"removed": name})

    async def challenge(request: web.Request) -> web.Response:
        user = _caller(request)
        body = await read_json(request)
        scope = _device_change_scope(body)
        return web.json_response({"webauthn": await mfa.begin_challenge(user, scope)})

    r = app.router
    r.add_post("/v1/login/begin", login_begin)
    r.add_post("/v1/login/passwordless/begin", passwordless_begin)
    r.add_post("/v1/login/passwordless", passwordless)
    r.add_post("/v1/invites/webauthn", invite_webauthn)
    r.add_get("/v1/mfa/devices", list_devices)
    r.add_post("/v1/mfa/devices/begin", begin_add)
    r.add_post("/v1/mfa/devices/finish", finish_add)
    r.add_post("/v1/mfa/devices/{name}/remove", remove)
    r.add_post("/v1/mfa/challenge", challenge)
