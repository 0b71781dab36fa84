"""Routes of access requests (issue 17): ``/v1/access-requests*``.

Layer: api. Parsing and serialising only; the rules live in :mod:`bastion.auth.requests` and
the pure :mod:`bastion.rbac.requests`. Declared in :mod:`bastion.contract.requests`.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.api.devices import key_binding
from bastion.auth.issuer import UserCerts
from bastion.auth.requests import AccessRequestService, GuardedRequests, NewRequest
from bastion.auth.server import AuthServer
from bastion.contract import core
from bastion.contract import requests as x
from bastion.contract.base import Empty
from bastion.types.requests import AccessRequest

__all__ = ["REQUEST_SERVICE", "add_request_routes", "request_reply"]

REQUEST_SERVICE: web.AppKey[AccessRequestService] = web.AppKey("access_request_service")


def request_reply(request: AccessRequest) -> x.AccessRequestReply:
    spec = request.spec
    needed = {
        role: min((spec.thresholds[i].approve for i in idx if i < len(spec.thresholds)), default=1)
        for role, idx in spec.role_thresholds.items()
    }
    return x.AccessRequestReply(
        id=request.name,
        user=spec.user,
        roles=spec.roles,
        resources=spec.resources,
        reason=spec.reason,
        state=spec.state,
        created=spec.created.isoformat(),
        pending_expires=spec.pending_expires.isoformat(),
        access_expires=spec.access_expires.isoformat(),
        reviews=[
            x.ReviewReply(
                author=r.author,
                verdict=r.verdict,
                reason=r.reason,
                created=r.created.isoformat(),
                automatic=r.automatic,
            )
            for r in spec.reviews
        ],
        approvals_needed=needed,
        suggested_reviewers=spec.suggested_reviewers,
        resolve_reason=spec.resolve_reason,
    )


def add_request_routes(
    app: web.Application,
    auth: AuthServer,
    certs_reply: Callable[[UserCerts], core.UserCerts],
) -> None:
    """Bind the access request endpoints; ``certs_reply`` serialises assumed certificates."""
    service = AccessRequestService(auth)
    app[REQUEST_SERVICE] = service

    async def create(call: Call[x.NewAccessRequest]) -> x.AccessRequestReply:
        body = call.body
        new = NewRequest(
            roles=tuple(body.roles),
            resources=tuple(body.resources),
            reason=body.reason,
            duration=body.duration,
        )
        return request_reply(await GuardedRequests(call.guard, service).create(new))

    async def list_requests(call: Call[Empty]) -> x.AccessRequests:
        q = call.query(x.ListQuery)
        items = await GuardedRequests(call.guard, service).list(q.state)
        return x.AccessRequests(items=[request_reply(r) for r in items])

    async def get(call: Call[Empty]) -> x.AccessRequestReply:
        return request_reply(await GuardedRequests(call.guard, service).get(call.path("id")))

    async def review(call: Call[x.Review]) -> x.AccessRequestReply:
        g = GuardedRequests(call.guard, service)
        done = await g.review(call.path("id"), call.body.verdict, call.body.reason)
        return request_reply(done)

    async def drop(call: Call[Empty]) -> Empty:
        await GuardedRequests(call.guard, service).delete(call.path("id"))
        return Empty()

    async def requestable(call: Call[Empty]) -> x.Requestable:
        resource = f"{call.path('kind')}/{call.path('name')}"
        roles = await GuardedRequests(call.guard, service).requestable(resource)
        return x.Requestable(resource=resource, roles=roles)

    async def assume(call: Call[x.Assume]) -> core.UserCerts:
        g = GuardedRequests(call.guard, service)
        body = call.body
        certs = await g.assume(call.path("id"), body.public_key, body.ttl, key_binding(body))
        return certs_reply(certs)

    bind(app, x.CREATE_REQUEST, create)
    bind(app, x.LIST_REQUESTS, list_requests)
    bind(app, x.GET_REQUEST, get)
    bind(app, x.REVIEW_REQUEST, review)
    bind(app, x.DROP_REQUEST, drop)
    bind(app, x.ASSUME_REQUEST, assume)
    bind(app, x.REQUESTABLE, requestable)
