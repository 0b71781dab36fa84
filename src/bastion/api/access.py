"""API routes of access explained (``bctl access``): admins ask what policy decides, and why.

* ``GET /v1/access/check?user=&node=&login=[&at=ISO-8601][&source_ip=][&mfa=true]`` — the
  decision, each role's verdict, the locks that apply, whether MFA would be required.
* ``GET /v1/access/ls?user=[&at=]`` — ``{"items": [{node, login, role, mfa_required}]}``.
* ``GET /v1/access/who?node=&login=[&at=]`` — ``{"items": [{user, role, mfa_required}]}``.

Each needs ``read`` on ``role`` and on ``user`` (the answers reveal both); the reasoning is
:mod:`bastion.rbac.explain`, the loading :mod:`bastion.auth.access_explain`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.access_explain import AccessExplainer
from bastion.auth.server import AuthServer
from bastion.contract import access as x
from bastion.contract.base import Empty
from bastion.errors import BadParameter

__all__ = ["add_access_routes", "parse_at"]


def parse_at(value: str) -> datetime | None:
    """``?at=`` as an aware datetime (naive means UTC); empty: now.

    Raises:
        BadParameter: not ISO 8601.
    """
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(
            f"at: {value!r} is not an ISO 8601 time (2026-12-07T22:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_access_routes(app: web.Application, auth: AuthServer) -> None:
    """Register the three ``/v1/access/*`` routes."""
    explainer = AccessExplainer(auth)

    async def admin(call: Call[Empty]) -> None:
        await call.guard.require("role", "read")
        await call.guard.require("user", "read")

    async def check(call: Call[Empty]) -> x.Decision:
        await admin(call)
        q = call.query(x.CheckQuery)
        answer = await explainer.check(
            q.user, q.node, q.login, at=parse_at(q.at), source_ip=q.source_ip, mfa_verified=q.mfa
        )
        return x.Decision.model_validate(answer)

    async def ls(call: Call[Empty]) -> x.Items:
        await admin(call)
        q = call.query(x.UserQuery)
        return x.Items(items=await explainer.ls(q.user, at=parse_at(q.at)))

    async def who(call: Call[Empty]) -> x.Items:
        await admin(call)
        q = call.query(x.TargetQuery)
        return x.Items(items=await explainer.who(q.node, q.login, at=parse_at(q.at)))

    bind(app, x.ACCESS_CHECK, check)
    bind(app, x.ACCESS_LS, ls)
    bind(app, x.ACCESS_WHO, who)
