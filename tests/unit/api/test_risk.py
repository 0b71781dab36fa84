from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.risk import add_risk_routes, settings_text
from bastion.contract.risk import RISK_RULES, RISK_TEST
from bastion.testing import make_auth
from bastion.types.risk import RiskRuleSpec


async def test_routes_are_bound() -> None:
    fx = await make_auth()
    app = web.Application()
    add_risk_routes(app, fx.auth)
    assert {RISK_RULES.key, RISK_TEST.key} <= set(bound_endpoints(app))


def test_settings_show_what_matters_for_the_type() -> None:
    burst = RiskRuleSpec(type="denied_burst", action="lock", lock_ttl=timedelta(hours=1))
    assert settings_text(burst.resolved()) == "threshold=20 window=1m ttl=1h"
    hours = RiskRuleSpec(type="unusual_hour").resolved()
    assert settings_text(hours) == "min_history=20 rare_share=0.02"
