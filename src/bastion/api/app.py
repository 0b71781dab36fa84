"""The auth HTTPS JSON API (mTLS on port 3025): parsing and serialising only.

Unauthenticated routes (login, invites, join, ping, OpenAPI) are rate-limited per source IP;
every other route needs a client certificate from the cluster and goes through GuardedAuth.
Errors are ``{"error": {"code": ..., "message": ...}}`` with the status of the error class.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from bastion import __version__
from bastion.api.access import add_access_routes
from bastion.api.admin_mfa import admin_mfa_for
from bastion.api.agents import add_agent_routes
from bastion.api.audiences import audience_of
from bastion.api.mfa import add_mfa_routes
from bastion.api.openapi import OPENAPI
from bastion.api.proxy_header import ClientAddresses
from bastion.api.ratelimit import RateLimiter
from bastion.api.recordings import add_recording_routes
from bastion.api.session import add_session_routes
from bastion.api.sso import add_sso_routes
from bastion.api.tls import identity_from_peer
from bastion.audit.log import AuditQuery
from bastion.auth.gate import Audience, Gate
from bastion.auth.guarded import GuardedAuth
from bastion.auth.issuer import HostCerts, UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.session_certs import SessionCerts
from bastion.auth.users import Invite, UserService
from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BadParameter,
    BastionError,
    LimitExceeded,
    MFARequired,
)
from bastion.locks.matcher import Locked
from bastion.sso.service import SSOService
from bastion.types.codec import canonical_kind, parse_resource, resource_to_dict
from bastion.types.duration import parse_duration
from bastion.types.inventory import Node
from bastion.web.app import add_web_routes
from bastion.web.body import read_json
from bastion.web.pages import not_found
from bastion.web.sessions import SESSION_COOKIE, WebSession, WebSessions

__all__ = ["build_app"]

log = structlog.get_logger("bastion.auth.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNLIMITED = frozenset({"/v1/ping", "/openapi.json", "/", "/web"})
"""Public routes that are not rate-limited (discovery and redirects); every other public and
web route is, per source address, before any authentication work."""


def _error(exc: BastionError) -> web.Response:
    body: dict[str, dict[str, Any]] = {"error": {"code": exc.code, "message": exc.message}}
    if isinstance(exc, MFARequired):  # machine-readable: the client answers and retries
        body["error"].update(challenge=exc.challenge, scope=exc.scope)
    return web.json_response(body, status=exc.http_status)


def _remote(request: web.Request) -> str:
    return request.remote or ""


def _real_client(clients: ClientAddresses) -> Middleware:
    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        ip = clients.get(request.transport)
        if ip is not None:
            request = request.clone(remote=ip)
        return await handler(request)

    return real_client


def _str(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadParameter(f"field {name!r} is required and must be a string")
    return value


def _duration(body: dict[str, Any], name: str, default: str) -> timedelta:
    try:
        return parse_duration(_str(body, name, default))
    except ValueError as exc:
        raise BadParameter(f"field {name!r}: {exc}") from None


def _list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadParameter(f"field {name!r} must be a list of strings")
    return value


def _credential(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise BadParameter(f"field {name!r} must be a WebAuthn credential (JSON object)")
    return value


def _user_certs(certs: UserCerts) -> dict[str, Any]:
    return {
        "user": certs.identity.user,
        "ssh_cert": certs.ssh_cert,
        "tls_cert": certs.tls_cert,
        "ssh_host_ca": certs.ssh_host_ca,
        "tls_host_ca": certs.tls_host_ca,
        "tls_user_ca": certs.tls_user_ca,
        "expires": certs.identity.expires.isoformat(),
        "roles": list(certs.identity.roles),
        "logins": list(certs.identity.logins),
        "cluster": certs.identity.cluster,
        "mfa_device": certs.identity.mfa_device,
    }


def _host_certs(certs: HostCerts) -> dict[str, Any]:
    return {
        "host_id": certs.identity.host_id,
        "ssh_cert": certs.ssh_cert,
        "tls_cert": certs.tls_cert,
        "ssh_user_ca": certs.ssh_user_ca,
        "ssh_host_ca": certs.ssh_host_ca,
        "tls_host_ca": certs.tls_host_ca,
        "tls_user_ca": certs.tls_user_ca,
        "expires": certs.identity.expires.isoformat(),
    }


def _invite(invite: Invite) -> dict[str, Any]:
    return {
        "user": invite.user,
        "token": invite.token,
        "url": invite.url,
        "expires": invite.expires.isoformat(),
    }


class AuthAPI:
    def __init__(self, auth: AuthServer, limiter: RateLimiter) -> None:
        self.auth = auth
        self.users = UserService(auth)
        self.limiter = limiter
        self.admin_mfa = admin_mfa_for(auth)
        self.gate = Gate.for_auth(auth)
        self.sessions = WebSessions(auth.deps.backend, auth.clock)

    # ---- middleware ----------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The one entry point: rate limits before authentication, then the gate for every
        route by its declared audience (:mod:`bastion.api.audiences`)."""
        try:
            resource = request.match_info.route.resource
            template = resource.canonical if resource is not None else None
            if template is None and request.path.startswith("/web/"):
                return self._web_not_found(request)  # the pages' 404, not the API's gate
            audience = audience_of(request.method, template)
            if audience is None:
                log.error("route without a declared audience", route=template)
                raise AccessDenied("access denied: this endpoint is not available")
            limited = (audience == "public" and request.path not in UNLIMITED) or (
                audience == "web" and not request.path.startswith("/web/static/")
            )
            if limited and not self.limiter.allow(_remote(request), self.auth.clock.monotonic()):
                raise LimitExceeded("too many requests from your address; wait and retry")
            route = f"{request.method} {template or request.path}"
            if audience == "web":
                request["web_session"] = await self._web_session(request, route)
            elif audience != "public":
                request["guard"] = guard = await self._guard(request, audience, route)
                await self.admin_mfa.check(request, guard.ctx.identity, guard.ctx.role_set)
            return await handler(request)
        except BastionError as exc:
            if isinstance(exc, AccessDenied | AuthenticationFailed):
                log.info("request refused", path=request.path, reason=exc.message)
            return _error(exc)
        except web.HTTPRequestEntityTooLarge as exc:
            return _error(LimitExceeded(f"request body too large: {exc.text}"))
        except web.HTTPException:
            raise
        except Exception:
            log.exception("internal error", path=request.path)
            return _error(BastionError("internal error; the auth server log has details"))

    def _web_not_found(self, request: web.Request) -> web.Response:
        """An unknown page under ``/web/`` (no route: public, rate-limited like the pages).
        ``/v1`` and every other unmatched path still go through the gate."""
        if not self.limiter.allow(_remote(request), self.auth.clock.monotonic()):
            raise LimitExceeded("too many requests from your address; wait and retry")
        return not_found(request.path)

    async def _guard(self, request: web.Request, audience: Audience, route: str) -> GuardedAuth:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise AuthenticationFailed(
                "this endpoint needs a client certificate: log in with bsh login, or run bctl "
                "on the auth host with --data-dir"
            )
        identity = identity_from_peer(
            der,
            await self.auth.issuer.ca("tls_user"),
            await self.auth.issuer.ca("tls_host"),
            self.auth.clock,
        )
        await self.gate.admit(identity, audience, route, _remote(request))
        return await GuardedAuth.for_identity(self.auth, self.users, identity, _remote(request))

    async def _web_session(self, request: web.Request, route: str) -> WebSession | None:
        """The browser's session when it passes the gate; a refused one is as good as none
        (the pages send the browser to sign in again), and is forgotten unless a lock (which
        may be lifted) refused it."""
        token = request.cookies.get(SESSION_COOKIE, "")
        session = await self.sessions.get(token) if token else None
        if session is None:
            return None
        try:
            await self.gate.admit(session.identity, "web", route, _remote(request))
        except Locked:
            return None
        except BastionError:
            await self.sessions.delete(token)
            return None
        return session

    # ---- public --------------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        pref = await self.auth.auth_preference()
        tls_host = await self.auth.issuer.ca("tls_host")
        return web.json_response(
            {
                "cluster": self.auth.cluster,
                "version": __version__,
                "second_factor": pref.spec.second_factor,
                "tls_host_ca": "".join(k.cert_pem for k in tls_host.spec.trusted_keys()),
                "server_time": self.auth.clock.now().isoformat(),
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def login(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        certs = await self.users.login(
            _str(body, "user"),
            _str(body, "password"),
            _str(body, "otp", ""),
            _str(body, "public_key"),
            _duration(body, "ttl", "12h"),
            _remote(request),
            webauthn=_credential(body, "webauthn"),
        )
        return web.json_response(_user_certs(certs))

    async def invite_start(self, request: web.Request) -> web.Response:
        info = await self.users.start_invite(
            _str(await read_json(request), "token"), _remote(request)
        )
        return web.json_response(
            {
                "user": info.user,
                "otp_required": info.otp_required,
                "otp_secret": info.otp_secret,
                "otp_uri": info.otp_uri,
                "second_factor": info.second_factor,
                "webauthn_allowed": info.webauthn_allowed,
            }
        )

    async def invite_complete(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        certs = await self.users.complete_invite(
            _str(body, "token"),
            _str(body, "password"),
            _str(body, "otp", ""),
            _str(body, "public_key"),
            _duration(body, "ttl", "12h"),
            _remote(request),
            webauthn=_credential(body, "webauthn"),
            device_name=_str(body, "device_name", ""),
        )
        return web.json_response(_user_certs(certs))

    async def join(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        certs = await self.auth.join(
            _str(body, "token"),
            _str(body, "host_name"),
            _str(body, "role", "node"),
            _str(body, "public_key"),
            _list(body, "dns_names"),
            _list(body, "ip_addresses"),
            _remote(request),
        )
        return web.json_response(_host_certs(certs))

    # ---- authenticated -------------------------------------------------------------------------

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response(request["guard"].whoami())

    async def list_resources(self, request: web.Request) -> web.Response:
        kind = canonical_kind(request.match_info["kind"])
        items = await request["guard"].list_resources(kind)
        body: dict[str, Any] = {"items": [resource_to_dict(r) for r in items]}
        if kind == "node":  # bsh ls: STATUS, beside the resources (which stay as stored)
            nodes = [n for n in items if isinstance(n, Node)]
            body["online"] = {n.name: self.auth.node_online(n) for n in nodes}
        return web.json_response(body)

    async def get_resource(self, request: web.Request) -> web.Response:
        kind = canonical_kind(request.match_info["kind"])
        item = await request["guard"].get_resource(kind, request.match_info["name"])
        return web.json_response(resource_to_dict(item))

    async def create_resource(self, request: web.Request) -> web.Response:
        resource = parse_resource(await read_json(request))
        force = request.query.get("force") == "true"
        created = await request["guard"].create_resource(resource, force)
        return web.json_response(resource_to_dict(created), status=201)

    async def update_resource(self, request: web.Request) -> web.Response:
        resource = parse_resource(await read_json(request))
        if resource.name != request.match_info["name"]:
            raise BadParameter("metadata.name does not match the name in the URL")
        force = request.query.get("force") == "true"
        updated = await request["guard"].update_resource(resource, force)
        return web.json_response(resource_to_dict(updated))

    async def delete_resource(self, request: web.Request) -> web.Response:
        kind = canonical_kind(request.match_info["kind"])
        await request["guard"].delete_resource(kind, request.match_info["name"])
        return web.json_response({"deleted": f"{kind}/{request.match_info['name']}"})

    async def add_user(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        traits = body.get("traits") or {}
        if not isinstance(traits, dict):
            raise BadParameter("field 'traits' must be an object of lists")
        invite = await request["guard"].add_user(
            _str(body, "name"), _list(body, "roles"), _list(body, "logins"), traits
        )
        return web.json_response(_invite(invite), status=201)

    async def update_user(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        user = await request["guard"].update_user(
            request.match_info["name"],
            _list(body, "roles") if "roles" in body else None,
            _list(body, "logins") if "logins" in body else None,
            body.get("traits") if isinstance(body.get("traits"), dict) else None,
        )
        return web.json_response(resource_to_dict(user))

    async def reset_user(self, request: web.Request) -> web.Response:
        invite = await request["guard"].reset_user(request.match_info["name"])
        return web.json_response(_invite(invite))

    async def add_token(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        labels = body.get("labels") or {}
        if not isinstance(labels, dict):
            raise BadParameter("field 'labels' must be an object")
        new = await request["guard"].add_token(
            _list(body, "roles"), _duration(body, "ttl", "30m"), labels
        )
        return web.json_response(
            {
                "token": new.token,
                "name": new.resource.name,
                "roles": new.resource.spec.roles,
                "expires": new.resource.metadata.expires.isoformat()
                if new.resource.metadata.expires
                else None,
            },
            status=201,
        )

    async def export_ca(self, request: web.Request) -> web.Response:
        text = await request["guard"].export_ca(
            request.query.get("type", "user"), request.query.get("format", "")
        )
        return web.json_response({"export": text})

    async def krl(self, request: web.Request) -> web.Response:
        published = await request["guard"].krl()
        return web.json_response(
            {
                "krl": base64.b64encode(published.data).decode(),
                "signature": published.signature,
                "version": published.version,
                "generated": published.generated.isoformat(),
                "key_ids": list(published.key_ids),
                "serials": [str(s) for s in published.serials],
                "unenforced_locks": list(published.unenforced),
            }
        )

    async def rotate_ca(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        ca = await request["guard"].rotate_ca(_str(body, "type"), _str(body, "phase"))
        return web.json_response(resource_to_dict(ca))

    async def sign_host(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        certs = await request["guard"].sign_host(
            _str(body, "host"),
            _str(body, "public_key"),
            _list(body, "principals"),
            _duration(body, "ttl", "720h"),
        )
        return web.json_response(_host_certs(certs))

    async def search_events(self, request: web.Request) -> web.Response:
        q = request.query

        def when(name: str) -> datetime | None:
            if not q.get(name):
                return None
            try:
                value = datetime.fromisoformat(q[name])
            except ValueError:
                raise BadParameter(f"{name}: expected an ISO 8601 time") from None
            return value if value.tzinfo else value.replace(tzinfo=UTC)  # naive means UTC

        query = AuditQuery(
            types=tuple(t for t in q.get("type", "").split(",") if t),
            user=q.get("user", ""),
            since=when("since"),
            until=when("until"),
            outcome=q.get("outcome", ""),
            limit=int(q.get("limit", "1000")) if q.get("limit", "1000").isdigit() else 1000,
        )
        events = await request["guard"].search_events(query)
        return web.json_response({"events": [e.model_dump(mode="json") for e in events]})


async def _confirm_node(request: web.Request) -> web.Response:
    return web.json_response(await request["guard"].confirm_node(request.match_info["name"]))


async def _audit_checkpoint(request: web.Request) -> web.Response:
    return web.json_response(await request["guard"].audit_checkpoint())


async def _audit_proof(request: web.Request) -> web.Response:
    q = request.query
    index_text = q.get("index", "")
    if not q.get("id") and not index_text.isdigit():
        raise BadParameter("pass ?id=EVENT_ID or ?index=N")
    index = int(index_text) if index_text.isdigit() else None
    return web.json_response(await request["guard"].audit_proof(index, q.get("id", "")))


def build_app(
    auth: AuthServer,
    *,
    rate: float,
    burst: int,
    max_body: int,
    clients: ClientAddresses | None = None,
) -> web.Application:
    """The auth API app. ``clients``: real client addresses of connections that came with a
    trusted PROXY protocol header (``request.remote`` is then the client, not the balancer)."""
    api = AuthAPI(auth, RateLimiter(rate=rate, burst=burst))
    app = web.Application(
        middlewares=[_real_client(clients), api.middleware]
        if clients is not None
        else [api.middleware],
        client_max_size=max_body,
    )
    r = app.router
    r.add_get("/v1/ping", api.ping)
    r.add_get("/openapi.json", api.openapi)
    r.add_post("/v1/login", api.login)
    r.add_post("/v1/invites/start", api.invite_start)
    r.add_post("/v1/invites/complete", api.invite_complete)
    r.add_post("/v1/join", api.join)
    r.add_get("/v1/whoami", api.whoami)
    r.add_post("/v1/users", api.add_user)
    r.add_patch("/v1/users/{name}", api.update_user)
    r.add_post("/v1/users/{name}/reset", api.reset_user)
    r.add_post("/v1/tokens", api.add_token)
    r.add_get("/v1/ca/export", api.export_ca)
    r.add_get("/v1/ca/krl", api.krl)
    r.add_post("/v1/ca/rotate", api.rotate_ca)
    r.add_post("/v1/ca/sign-host", api.sign_host)
    r.add_get("/v1/events", api.search_events)
    r.add_post("/v1/nodes/{name}/confirm", _confirm_node)
    r.add_post("/v1/audit/checkpoint", _audit_checkpoint)
    r.add_get("/v1/audit/proof", _audit_proof)
    r.add_get("/v1/resources/{kind}", api.list_resources)
    r.add_post("/v1/resources/{kind}", api.create_resource)
    r.add_get("/v1/resources/{kind}/{name}", api.get_resource)
    r.add_put("/v1/resources/{kind}/{name}", api.update_resource)
    r.add_delete("/v1/resources/{kind}/{name}", api.delete_resource)
    add_agent_routes(app, auth)
    add_session_routes(app, SessionCerts(auth, auth.mfa))
    sso = SSOService(auth, _user_certs)
    add_sso_routes(app, sso)
    add_web_routes(app, sso, api.users)
    add_recording_routes(app, auth)
    add_access_routes(app, auth)
    add_mfa_routes(app, auth, api.users, _user_certs)
    return app
