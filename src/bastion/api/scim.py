"""SCIM 2.0 routes (:mod:`bastion.contract.scim`): the bearer check, SCIM JSON, SCIM errors.

Layer: api. The gate middleware of :mod:`bastion.api.app` hands every request of the ``scim``
audience to :func:`scim_gate`: rate limit per source address, then the connector's bearer token
(:class:`bastion.auth.scim.ScimTokens`, constant-time), then the handler; every failure is a
SCIM error document (``urn:ietf:params:scim:api:messages:2.0:Error``) with the HTTP status and
``scimType``, in ``application/scim+json``. Changes are audited with their records
(``scim.user.*``, ``scim.group.*``); reads and refusals as ``scim.request``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.api.ratelimit import RateLimiter
from bastion.auth.scim import SCIM_ACTOR_PREFIX, ScimTokens
from bastion.auth.server import AuthServer
from bastion.contract import scim as s
from bastion.contract.base import Empty
from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BastionError,
    LimitExceeded,
    NotFound,
)
from bastion.sso.scim import Page, ScimDirectory
from bastion.types.connectors import CONNECTOR_KINDS
from bastion.types.scim import ERROR_SCHEMA, LIST_SCHEMA, ScimProblem

__all__ = ["SCIM", "ScimAPI", "add_scim_routes", "scim_gate"]

log = structlog.get_logger("bastion.api.scim")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 1 << 20
DEFAULT_COUNT = 100


def scim_response(doc: Any, status: int = 200, version: str = "") -> web.Response:
    headers = {"ETag": version} if version else {}
    return web.Response(
        body=json.dumps(doc).encode(),
        status=status,
        content_type=s.SCIM_MEDIA_TYPE,
        headers=headers,
    )


def scim_error(exc: BastionError) -> web.Response:
    if isinstance(exc, ScimProblem):
        status, scim_type = exc.status, exc.scim_type
    else:
        status, scim_type = exc.http_status, ""
        if isinstance(exc, NotFound):
            status = 404
    doc: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": exc.message}
    if scim_type:
        doc["scimType"] = scim_type
    response = scim_response(doc, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="scim"'
    return response


class ScimAPI:
    def __init__(self, auth: AuthServer, limiter: RateLimiter | None = None) -> None:
        self.auth = auth
        self.tokens = ScimTokens(auth)
        self.directory = ScimDirectory(auth)
        self.limiter = limiter or RateLimiter(rate=100.0, burst=500)

    async def _audit(
        self, request: web.Request, route: str, connector: str, outcome: str, reason: str = ""
    ) -> None:
        await self.auth.audit.emit(
            "scim.request",
            outcome=outcome,
            user=SCIM_ACTOR_PREFIX + connector if connector else "",
            remote_addr=request.remote or "",
            target=route,
            connector=connector,
            reason=reason,
        )

    async def gate(self, request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
        connector = ""
        try:
            if not self.limiter.allow(request.remote or "", self.auth.clock.monotonic()):
                raise LimitExceeded("too many SCIM requests from your address; wait and retry")
            connector = await self.tokens.authenticate(request.headers.get("Authorization", ""))
            request["scim_connector"] = connector
            response = await handler(request)
            if request.method in ("GET", "HEAD"):
                await self._audit(request, route, connector, "success")
            return response
        except BastionError as exc:
            if isinstance(exc, AuthenticationFailed | AccessDenied):
                log.info("SCIM request refused", path=request.path, reason=exc.message)
            await self._audit(request, route, connector, "failure", exc.message)
            return scim_error(exc)
        except web.HTTPRequestEntityTooLarge:
            problem = ScimProblem("request body too large", 413, "tooMany")
            await self._audit(request, route, connector, "failure", problem.message)
            return scim_error(problem)


SCIM: web.AppKey[ScimAPI] = web.AppKey("scim_api")


async def scim_gate(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    """The ``scim`` audience's admission (called by the API's gate middleware)."""
    api = request.app.get(SCIM)
    if api is None:
        return scim_error(ScimProblem("SCIM is not served here", 404))
    return await api.gate(request, handler, route)


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ScimProblem("request body too large", 413, "tooMany")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ScimProblem("the body is not valid JSON", 400, "invalidSyntax") from None


def _int(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ScimProblem(f"{name}: expected an integer", 400, "invalidValue") from None


def _list_response(page: Page) -> web.Response:
    return scim_response(
        {
            "schemas": [LIST_SCHEMA],
            "totalResults": page.total,
            "startIndex": page.start,
            "itemsPerPage": len(page.resources),
            "Resources": page.resources,
        }
    )


def _doc_response(doc: dict[str, Any], status: int = 200) -> web.Response:
    response = scim_response(doc, status, doc["meta"]["version"])
    if status == 201:
        response.headers["Location"] = doc["meta"]["location"]
    return response


SERVICE_PROVIDER_CONFIG = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    "documentationUri": "docs/scim.md",
    "patch": {"supported": True},
    "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
    "filter": {"supported": True, "maxResults": 1000},
    "changePassword": {"supported": False},
    "sort": {"supported": False},
    "etag": {"supported": True},
    "authenticationSchemes": [
        {
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "bctl scim token --connector=NAME",
            "primary": True,
        }
    ],
}


def add_scim_routes(app: web.Application, auth: AuthServer) -> None:
    """Register the SCIM routes and the token endpoint."""
    api = app[SCIM] = ScimAPI(auth)
    directory = api.directory

    def connector(call: Call[Empty]) -> str:
        name: str = call.request["scim_connector"]
        return name

    def if_match(call: Call[Empty]) -> str:
        return call.request.headers.get("If-Match", "")

    async def config(call: Call[Empty]) -> web.StreamResponse:
        return scim_response(SERVICE_PROVIDER_CONFIG)

    async def list_users(call: Call[Empty]) -> web.StreamResponse:
        q = call.request
        page = await directory.list_users(
            connector(call),
            q.query.get("filter", ""),
            _int(q, "startIndex", 1),
            _int(q, "count", DEFAULT_COUNT),
        )
        return _list_response(page)

    async def create_user(call: Call[Empty]) -> web.StreamResponse:
        user = await directory.create_user(connector(call), await _body(call.request))
        return _doc_response(await directory.user_doc(user), 201)

    async def get_user(call: Call[Empty]) -> web.StreamResponse:
        user = await directory.user(connector(call), call.path("id"))
        return _doc_response(await directory.user_doc(user))

    async def replace_user(call: Call[Empty]) -> web.StreamResponse:
        body = await _body(call.request)
        user = await directory.replace_user(connector(call), call.path("id"), body, if_match(call))
        return _doc_response(await directory.user_doc(user))

    async def patch_user(call: Call[Empty]) -> web.StreamResponse:
        body = await _body(call.request)
        user = await directory.patch_user(connector(call), call.path("id"), body, if_match(call))
        return _doc_response(await directory.user_doc(user))

    async def delete_user(call: Call[Empty]) -> web.StreamResponse:
        await directory.delete_user(connector(call), call.path("id"), if_match(call))
        return web.Response(status=204)

    async def list_groups(call: Call[Empty]) -> web.StreamResponse:
        q = call.request
        page = await directory.list_groups(
            connector(call),
            q.query.get("filter", ""),
            _int(q, "startIndex", 1),
            _int(q, "count", DEFAULT_COUNT),
        )
        return _list_response(page)

    async def create_group(call: Call[Empty]) -> web.StreamResponse:
        group = await directory.create_group(connector(call), await _body(call.request))
        return _doc_response(await directory.group_doc(group), 201)

    async def get_group(call: Call[Empty]) -> web.StreamResponse:
        group = await directory.group(connector(call), call.path("id"))
        return _doc_response(await directory.group_doc(group))

    async def replace_group(call: Call[Empty]) -> web.StreamResponse:
        body = await _body(call.request)
        group = await directory.replace_group(
            connector(call), call.path("id"), body, if_match(call)
        )
        return _doc_response(await directory.group_doc(group))

    async def patch_group(call: Call[Empty]) -> web.StreamResponse:
        body = await _body(call.request)
        group = await directory.patch_group(connector(call), call.path("id"), body, if_match(call))
        return _doc_response(await directory.group_doc(group))

    async def delete_group(call: Call[Empty]) -> web.StreamResponse:
        await directory.delete_group(connector(call), call.path("id"), if_match(call))
        return web.Response(status=204)

    async def new_token(call: Call[s.NewScimToken]) -> s.ScimTokenReply:
        name = call.body.connector
        kinds = [k for k in CONNECTOR_KINDS if await _has(auth, k, name)]
        if not kinds:
            raise NotFound(f'no SSO connector "{name}" (bctl get oidc, saml and github list them)')
        await call.guard.require(kinds[0], "update")
        token = await api.tokens.create(name, call.guard.ctx.actor)
        url = f"{auth.deps.public_url.rstrip('/')}/scim/v2"
        return s.ScimTokenReply(connector=name, token=token, url=url)

    bind(app, s.SCIM_CONFIG, config)
    bind(app, s.SCIM_USERS, list_users)
    bind(app, s.SCIM_USER_CREATE, create_user)
    bind(app, s.SCIM_USER_GET, get_user)
    bind(app, s.SCIM_USER_REPLACE, replace_user)
    bind(app, s.SCIM_USER_PATCH, patch_user)
    bind(app, s.SCIM_USER_DELETE, delete_user)
    bind(app, s.SCIM_GROUPS, list_groups)
    bind(app, s.SCIM_GROUP_CREATE, create_group)
    bind(app, s.SCIM_GROUP_GET, get_group)
    bind(app, s.SCIM_GROUP_REPLACE, replace_group)
    bind(app, s.SCIM_GROUP_PATCH, patch_group)
    bind(app, s.SCIM_GROUP_DELETE, delete_group)
    bind(app, s.SCIM_TOKEN, new_token)


async def _has(auth: AuthServer, kind: str, name: str) -> bool:
    try:
        await auth.store(kind).get(name)
        return True
    except NotFound:
        return False
