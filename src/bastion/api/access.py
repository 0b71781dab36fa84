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

from bastion.auth.access_explain import AccessExplainer
from bastion.auth.server import AuthServer
from bastion.errors import BadParameter

__all__ = ["ACCESS_ROUTES", "add_access_routes", "parse_at"]

ACCESS_ROUTES = ("/v1/access/check", "/v1/access/ls", "/v1/access/who")


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


def _required(request: web.Request, *names: str) -> list[str]:
    values = [request.query.get(n, "") for n in names]
    missing = [n for n, v in zip(names, values, strict=True) if not v]
    if missing:
        raise BadParameter(f"query parameter(s) required: {', '.join(missing)}")
    return values


def add_access_routes(app: web.Application, auth: AuthServer) -> None:
    """Register the three ``/v1/access/*`` routes."""
    explainer = AccessExplainer(auth)

    async def admin(request: web.Request) -> None:
        guard = request["guard"]
        await guard.require("role", "read")
        await guard.require("user", "read")

    async def check(request: web.Request) -> web.Response:
        await admin(request)
        user, node, login = _required(request, "user", "node", "login")
        answer = await explainer.check(
            user,
            node,
            login,
            at=parse_at(request.query.get("at", "")),
            source_ip=request.query.get("source_ip", ""),
            mfa_verified=request.query.get("mfa") == "true",
        )
        return web.json_response(answer)

    async def ls(request: web.Request) -> web.Response:
        await admin(request)
        (user,) = _required(request, "user")
        items = await explainer.ls(user, at=parse_at(request.query.get("at", "")))
        return web.json_response({"items": items})

    async def who(request: web.Request) -> web.Response:
        await admin(request)
        node, login = _required(request, "node", "login")
        items = await explainer.who(node, login, at=parse_at(request.query.get("at", "")))
        return web.json_response({"items": items})

    app.router.add_get("/v1/access/check", check)
    app.router.add_get("/v1/access/ls", ls)
    app.router.add_get("/v1/access/who", who)
