"""The application-access API (:mod:`bastion.contract.apps`) over :mod:`bastion.auth.apps`.

Layer: ``api`` (the HTTP edge: parsing and serialising only). The JWKS is public (apps fetch
it); listing apps and app certificates (MFA-scoped ones too) are for users. App addresses
are given under the host name the caller reached the API by (the proxy's public address).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.apps import AppAccess
from bastion.auth.server import AuthServer
from bastion.contract import apps as c
from bastion.contract.base import Empty, ResourceDoc
from bastion.errors import AccessDenied, BadParameter
from bastion.protocols.apphost import app_address
from bastion.types.apps import App
from bastion.types.codec import resource_to_dict
from bastion.types.identity import Identity
from bastion.web.apps import APP_ACCESS, add_app_launch

__all__ = ["add_app_routes", "public_addr"]


def public_addr(app: App, host: str) -> str:
    """The app's address under the proxy address ``host`` (``name[:port]``)."""
    return app_address(app.metadata.name, app.spec.public_addr, host)


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadParameter(f"labels must be k=v[,k=v], got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def add_app_routes(app: web.Application, auth: AuthServer) -> AppAccess:
    """Serve the app API and the login pages' app launch; returns the app access (the proxy's
    app route in the same process uses it)."""
    access = AppAccess(auth)
    add_app_launch(app, access)
    app[APP_ACCESS] = access

    async def jwks(call: Call[Empty]) -> c.Jwks:
        return c.Jwks(keys=(await access.jwks())["keys"])

    async def list_apps(call: Call[Empty]) -> c.AppList:
        query = call.query(c.AppsQuery)
        found = await access.list_allowed(call.guard.ctx.identity, _labels(query.labels))
        host = call.request.host
        return c.AppList(
            apps=[
                c.AppInfo(
                    name=a.metadata.name,
                    public_addr=public_addr(a, host),
                    labels=a.all_labels(),
                    protocol="tcp" if a.spec.uri.startswith("tcp://") else "http",
                )
                for a in found
            ]
        )

    async def app_cert(call: Call[c.AppCertRequest]) -> c.AppCert:
        b = call.body
        cert = await access.app_cert(
            call.guard.ctx.identity, b.public_key, b.app, b.ttl, call.remote, call.peer_key_sha256
        )
        target = await access.get_app(b.app)
        return c.AppCert(
            cert=cert.cert_pem,
            ca=cert.ca_pem,
            expires=cert.expires.isoformat(),
            public_addr=public_addr(target, call.request.host),
        )

    async def mfa_challenge(call: Call[c.AppMfaTarget]) -> c.AppMfaChallenge:
        got = await access.mfa_challenge(call.guard.ctx.identity, call.body.app, call.remote)
        return c.AppMfaChallenge(
            mfa_required=got.mfa_required, scope=got.scope, challenge=got.challenge, totp=got.totp
        )

    async def mfa_cert(call: Call[c.AppMfaCertRequest]) -> c.AppCert:
        b = call.body
        cert = await access.mfa_cert(
            call.guard.ctx.identity, b.public_key, b.app, call.remote,
            webauthn=b.mfa_response, otp=b.otp,
        )  # fmt: skip
        target = await access.get_app(b.app)
        return c.AppCert(
            cert=cert.cert_pem,
            ca=cert.ca_pem,
            expires=cert.expires.isoformat(),
            public_addr=public_addr(target, call.request.host),
        )

    async def heartbeat(call: Call[ResourceDoc]) -> ResourceDoc:
        found = call.body.root
        if not isinstance(found, App):
            raise BadParameter("an app heartbeat carries an app resource")
        return ResourceDoc(await access.heartbeat(found, call.guard.ctx.identity, call.remote))

    # A proxy in its own process serves apps through these (docs/app-access.md): it has
    # verified the identity it sends (a session's, or a user certificate at its handshake), as
    # it does for SSH and databases; only proxies may ask.
    def proxy_only(call: Call[Any]) -> None:
        ident = call.guard.ctx.identity
        if ident.kind != "host" or "proxy" not in ident.roles:
            raise AccessDenied("access denied: app sessions and assertions are for proxies")

    async def session(call: Call[c.AppSessionRequest]) -> c.AppSessionFound:
        proxy_only(call)
        b = call.body
        if b.code:
            token, found = await access.sessions.redeem(b.code, b.app)
        else:
            token = b.token
            got = await access.sessions.get(token, b.app)
            if got is None:
                return c.AppSessionFound(found=False)
            found = got
        return c.AppSessionFound(
            found=True,
            token=token,
            id=found.id,
            identity=found.identity.model_dump(mode="json"),
            expires=found.expires,
        )

    async def session_end(call: Call[c.AppSessionRequest]) -> Empty:
        proxy_only(call)
        await access.sessions.end(call.body.token)
        return Empty()

    async def authorize(call: Call[c.AppAuthorizeRequest]) -> c.AppAuthorized:
        proxy_only(call)
        try:
            who = Identity.model_validate(call.body.identity)
        except ValueError:
            raise BadParameter("not an identity") from None
        if who.cluster != auth.cluster or who.kind == "host" or who.expires <= auth.clock.now():
            raise AccessDenied(f'app "{call.body.app}" not found or access denied')
        found = await access.authorize(who, call.body.app)
        return c.AppAuthorized(app=resource_to_dict(found), jwt=await access.assertion(who, found))

    bind(app, c.APP_SESSION, session)
    bind(app, c.APP_SESSION_END, session_end)
    bind(app, c.APP_AUTHORIZE, authorize)
    bind(app, c.JWKS, jwks)
    bind(app, c.APP_HEARTBEAT, heartbeat)
    bind(app, c.LIST_APPS, list_apps)
    bind(app, c.APP_CERT, app_cert)
    bind(app, c.APP_MFA_CHALLENGE, mfa_challenge)
    bind(app, c.APP_MFA_CERT, mfa_cert)
    return access
