"""The admin pages' JSON endpoints are served (bound from the contract, so the gate and the
OpenAPI document know them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.web_admin import add_web_admin_api_routes
from bastion.contract.web_admin import WEB_ADMIN_MFA_BEGIN, WEB_RECORDING_CAST
from bastion.web.admin_common import Shell


def test_endpoints_are_bound() -> None:
    app = web.Application()
    auth: Any = SimpleNamespace()
    add_web_admin_api_routes(app, Shell(auth, SimpleNamespace()))  # type: ignore[arg-type]
    bound = bound_endpoints(app)
    assert bound[WEB_ADMIN_MFA_BEGIN.key] is WEB_ADMIN_MFA_BEGIN
    assert bound[WEB_RECORDING_CAST.key] is WEB_RECORDING_CAST
