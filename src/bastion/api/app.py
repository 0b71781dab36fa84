"""The auth HTTPS JSON API (mTLS on port 3025): parsing and serialising only.

Unauthenticated routes (login, invites, join, ping, OpenAPI) are rate-limited per source IP;
every other route needs a client certificate from the cluster and goes through GuardedAuth.
Errors are ``{"error": {"code": ..., "message": ...}}`` with the status of the error class.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from bastion import __version__
from bastion.api.access import add_access_routes
from bastion.api.admin_mfa import admin_mfa_for
from bastion.api.agents import add_agent_routes
from bastion.api.apps import add_app_routes
from bastion.api.audiences import audience_of
from bastion.api.binding import Call, bind
from bastion.api.bots import add_bot_routes
from bastion.api.db import add_db_routes
from bastion.api.devices import add_device_routes, key_binding, login_proof, ping_challenge
from bastion.api.mfa import add_mfa_routes
from bastion.api.openapi import openapi_document
from bastion.api.proxy_header import ClientAddresses
from bastion.api.ratelimit import RateLimiter
from bastion.api.recordings import add_recording_routes
from bastion.api.requests import add_request_routes
from bastion.api.risk import add_risk_routes
from bastion.api.scim import add_scim_routes, scim_gate
from bastion.api.session import add_session_routes
from bastion.api.sessions import add_live_session_routes
from bastion.api.sso import add_sso_routes
from bastion.api.tls import identity_from_peer
from bastion.api.trust import add_trust_routes
from bastion.api.web import add_web_api_routes
from bastion.api.web_admin import add_web_admin_api_routes
from bastion.audit.log import AuditQuery
from bastion.auth.gate import Audience, Gate
from bastion.auth.guarded import GuardedAuth
from bastion.auth.issuer import HostCerts, UserCerts
from bastion.auth.server import AuthServer
from bastion.auth.session_certs import SessionCerts
from bastion.auth.users import Invite, UserService
from bastion.contract import core as c
from bastion.contract import resources as r
from bastion.contract.base import Empty, ResourceDoc
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
from bastion.types.codec import canonical_kind
from bastion.types.inventory import Node
from bastion.web.admin_common import Shell
from bastion.web.app import add_web_routes
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


def user_certs(certs: UserCerts) -> c.UserCerts:
    return c.UserCerts(
        user=certs.identity.user,
        ssh_cert=certs.ssh_cert,
        tls_cert=certs.tls_cert,
        ssh_host_ca=certs.ssh_host_ca,
        tls_host_ca=certs.tls_host_ca,
        tls_user_ca=certs.tls_user_ca,
        expires=certs.identity.expires.isoformat(),
        roles=list(certs.identity.roles),
        logins=list(certs.identity.logins),
        cluster=certs.identity.cluster,
        mfa_device=certs.identity.mfa_device,
        device_challenge=certs.device_challenge,
        device_error=certs.device_error,
    )


def _host_certs(certs: HostCerts) -> c.HostCerts:
    return c.HostCerts(
        host_id=certs.identity.host_id,
        ssh_cert=certs.ssh_cert,
        tls_cert=certs.tls_cert,
        ssh_user_ca=certs.ssh_user_ca,
        ssh_host_ca=certs.ssh_host_ca,
        tls_host_ca=certs.tls_host_ca,
        tls_user_ca=certs.tls_user_ca,
        expires=certs.identity.expires.isoformat(),
    )


def _invite(invite: Invite) -> c.Invite:
    return c.Invite(
        user=invite.user, token=invite.token, url=invite.url, expires=invite.expires.isoformat()
    )


def _when(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(f"{name}: expected an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive means UTC


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
                audience == "web" and not request.path.startswith(("/web/static/", "/web/vendor/"))
            )
            if limited and not self.limiter.allow(_remote(request), self.auth.clock.monotonic()):
                raise LimitExceeded("too many requests from your address; wait and retry")
            route = f"{request.method} {template or request.path}"
            if audience == "scim":  # an identity provider's bearer token, SCIM errors
                return await scim_gate(request, handler, route)
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

    async def ping(self, call: Call[Empty]) -> c.Ping:
        pref = await self.auth.auth_preference()
        tls_host = await self.auth.issuer.ca("tls_host")
        return c.Ping(
            cluster=self.auth.cluster,
            version=__version__,
            second_factor=pref.spec.second_factor,
            tls_host_ca="".join(k.cert_pem for k in tls_host.spec.trusted_keys()),
            server_time=self.auth.clock.now().isoformat(),
            device_challenge=ping_challenge(self.auth),
        )

    async def openapi(self, call: Call[Empty]) -> c.OpenAPIDocument:
        return c.OpenAPIDocument.model_validate(openapi_document())

    async def login(self, call: Call[c.Login]) -> c.UserCerts:
        b = call.body
        certs = await self.users.login(
            b.user,
            b.password,
            b.otp,
            b.public_key,
            b.ttl,
            call.remote,
            webauthn=b.webauthn,
            device=login_proof(b.device),  # the device's proof travels with the login
            ssh_public_key=b.ssh_public_key,  # a TPM-held SSH key (bsh login --key-store=tpm)
        )
        return user_certs(certs)

    async def invite_start(self, call: Call[c.InviteToken]) -> c.InviteInfo:
        info = await self.users.start_invite(call.body.token, call.remote)
        return c.InviteInfo(
            user=info.user,
            otp_required=info.otp_required,
            otp_secret=info.otp_secret,
            otp_uri=info.otp_uri,
            second_factor=info.second_factor,
            webauthn_allowed=info.webauthn_allowed,
        )

    async def invite_complete(self, call: Call[c.InviteComplete]) -> c.UserCerts:
        b = call.body
        certs = await self.users.complete_invite(
            b.token,
            b.password,
            b.otp,
            b.public_key,
            b.ttl,
            call.remote,
            webauthn=b.webauthn,
            device_name=b.device_name,
            binding=key_binding(b),  # the device ceremony, a TPM-held SSH key
        )
        return user_certs(certs)

    async def join(self, call: Call[c.Join]) -> c.HostCerts:
        b = call.body
        certs = await self.auth.join(
            b.token, b.host_name, b.role, b.public_key, b.dns_names, b.ip_addresses, call.remote,
            ttl=b.ttl,
        )  # fmt: skip
        return _host_certs(certs)

    # ---- authenticated -------------------------------------------------------------------------

    async def whoami(self, call: Call[Empty]) -> c.WhoAmI:
        return c.WhoAmI.model_validate(call.guard.whoami())

    async def list_resources(self, call: Call[Empty]) -> r.ResourceList:
        kind = canonical_kind(call.path("kind"))
        items = await call.guard.list_resources(kind)
        online = None
        if kind == "node":  # bsh ls: STATUS, beside the resources (which stay as stored)
            online = {n.name: self.auth.node_online(n) for n in items if isinstance(n, Node)}
        return r.ResourceList(items=list(items), online=online)

    async def get_resource(self, call: Call[Empty]) -> ResourceDoc:
        kind = canonical_kind(call.path("kind"))
        return ResourceDoc(await call.guard.get_resource(kind, call.path("name")))

    async def create_resource(self, call: Call[ResourceDoc]) -> ResourceDoc:
        force = call.query(r.WriteQuery).force
        return ResourceDoc(await call.guard.create_resource(call.body.root, force))

    async def update_resource(self, call: Call[ResourceDoc]) -> ResourceDoc:
        resource = call.body.root
        if resource.name != call.path("name"):
            raise BadParameter("metadata.name does not match the name in the URL")
        force = call.query(r.WriteQuery).force
        return ResourceDoc(await call.guard.update_resource(resource, force))

    async def delete_resource(self, call: Call[Empty]) -> r.Deleted:
        kind = canonical_kind(call.path("kind"))
        await call.guard.delete_resource(kind, call.path("name"))
        return r.Deleted(deleted=f"{kind}/{call.path('name')}")

    async def add_user(self, call: Call[c.NewUser]) -> c.Invite:
        b = call.body
        invite = await call.guard.add_user(b.name, b.roles, b.logins, b.traits)
        return _invite(invite)

    async def update_user(self, call: Call[c.UserChange]) -> ResourceDoc:
        b = call.body
        user = await call.guard.update_user(call.path("name"), b.roles, b.logins, b.traits)
        return ResourceDoc(user)

    async def reset_user(self, call: Call[Empty]) -> c.Invite:
        return _invite(await call.guard.reset_user(call.path("name")))

    async def add_token(self, call: Call[c.NewToken]) -> c.Token:
        b = call.body
        new = await call.guard.add_token(b.roles, b.ttl, b.labels)
        expires = new.resource.metadata.expires
        return c.Token(
            token=new.token,
            name=new.resource.name,
            roles=new.resource.spec.roles,
            expires=expires.isoformat() if expires else None,
        )

    async def export_ca(self, call: Call[Empty]) -> c.Exported:
        q = call.query(c.ExportQuery)
        return c.Exported(export=await call.guard.export_ca(q.type, q.format))

    async def krl(self, call: Call[Empty]) -> c.PublishedKRL:
        published = await call.guard.krl()
        return c.PublishedKRL(
            krl=base64.b64encode(published.data).decode(),
            signature=published.signature,
            version=published.version,
            generated=published.generated.isoformat(),
            key_ids=list(published.key_ids),
            serials=[str(s) for s in published.serials],
            unenforced_locks=list(published.unenforced),
        )

    async def rotate_ca(self, call: Call[c.Rotate]) -> ResourceDoc:
        return ResourceDoc(await call.guard.rotate_ca(call.body.type, call.body.phase))

    async def sign_host(self, call: Call[c.SignHost]) -> c.HostCerts:
        b = call.body
        certs = await call.guard.sign_host(b.host, b.public_key, b.principals, b.ttl)
        return _host_certs(certs)

    async def search_events(self, call: Call[Empty]) -> c.Events:
        q = call.query(c.EventQuery)
        query = AuditQuery(
            types=tuple(q.type),
            user=q.user,
            since=_when("since", q.since),
            until=_when("until", q.until),
            outcome=q.outcome,
            limit=q.limit,
        )
        events = await call.guard.search_events(query)
        return c.Events(events=[e.model_dump(mode="json") for e in events])

    async def confirm_node(self, call: Call[Empty]) -> c.NodeConfirmed:
        return c.NodeConfirmed.model_validate(await call.guard.confirm_node(call.path("name")))

    async def audit_checkpoint(self, call: Call[Empty]) -> c.Checkpoint:
        return c.Checkpoint.model_validate(await call.guard.audit_checkpoint())

    async def audit_proof(self, call: Call[Empty]) -> c.Proof:
        q = call.query(c.ProofQuery)
        if not q.id and q.index is None:
            raise BadParameter("pass ?id=EVENT_ID or ?index=N")
        return c.Proof.model_validate(await call.guard.audit_proof(q.index, q.id))


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
    bind(app, c.PING, api.ping)
    bind(app, c.OPENAPI, api.openapi)
    bind(app, c.LOGIN, api.login)
    bind(app, c.INVITE_START, api.invite_start)
    bind(app, c.INVITE_COMPLETE, api.invite_complete)
    bind(app, c.JOIN, api.join)
    bind(app, c.WHOAMI, api.whoami)
    bind(app, c.CREATE_USER, api.add_user)
    bind(app, c.UPDATE_USER, api.update_user)
    bind(app, c.RESET_USER, api.reset_user)
    bind(app, c.CREATE_TOKEN, api.add_token)
    bind(app, c.EXPORT_CA, api.export_ca)
    bind(app, c.KRL, api.krl)
    bind(app, c.ROTATE_CA, api.rotate_ca)
    bind(app, c.SIGN_HOST, api.sign_host)
    bind(app, c.SEARCH_EVENTS, api.search_events)
    bind(app, c.CONFIRM_NODE, api.confirm_node)
    bind(app, c.AUDIT_CHECKPOINT, api.audit_checkpoint)
    bind(app, c.AUDIT_PROOF, api.audit_proof)
    bind(app, r.LIST_RESOURCES, api.list_resources)
    bind(app, r.GET_RESOURCE, api.get_resource)
    bind(app, r.CREATE_RESOURCE, api.create_resource)
    bind(app, r.UPDATE_RESOURCE, api.update_resource)
    bind(app, r.DELETE_RESOURCE, api.delete_resource)
    add_agent_routes(app, auth)
    add_session_routes(app, SessionCerts(auth, auth.mfa))
    sso = SSOService(auth, lambda certs: user_certs(certs).model_dump())
    add_sso_routes(app, sso)
    add_web_routes(app, sso, api.users)
    add_web_api_routes(app, auth, api.users)
    add_web_admin_api_routes(app, Shell(auth, api.users))
    add_recording_routes(app, auth)
    add_access_routes(app, auth)
    add_bot_routes(app, auth)
    add_device_routes(app, auth)
    add_trust_routes(app, auth)
    add_mfa_routes(app, auth, api.users, user_certs)
    add_db_routes(app, auth)
    add_request_routes(app, auth, user_certs)
    add_live_session_routes(app, auth)
    add_scim_routes(app, auth)
    add_risk_routes(app, auth)
    add_app_routes(app, auth)
    return app
