"""Risk rule routes (:mod:`bastion.contract.risk`): ``bctl risk ls`` and ``bctl risk test``.

Layer: api. Listing needs ``list`` on ``risk_rule``; a replay also reads the audit log, so it
needs ``list`` on ``event`` too. A replay commits nothing (docs/risk.md).
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.risk import replay, rule_set, rule_status
from bastion.auth.server import AuthServer
from bastion.config.risk import RiskConfig
from bastion.contract import risk as r
from bastion.contract.base import Empty
from bastion.types.duration import format_duration
from bastion.types.risk import RiskRuleSpec

__all__ = ["REPLAY_LEARN", "add_risk_routes", "settings_text"]

REPLAY_LEARN = 20_000
"""Events before ``--since`` a dry run learns per-user history from (signals discarded)."""


def settings_text(spec: RiskRuleSpec) -> str:
    """The thresholds that matter for the rule's type, e.g. ``threshold=10 window=5m``."""
    parts: list[str] = []
    if spec.type in ("failed_logins", "denied_burst", "lateral_movement"):
        parts.append(f"threshold={spec.threshold}")
    if spec.type in ("failed_logins", "denied_burst", "lateral_movement", "concurrent_networks",
                     "admin_new_source"):  # fmt: skip
        parts.append(f"window={format_duration(spec.window)}")
    if spec.type in ("new_source", "unusual_hour"):
        parts.append(f"min_history={spec.min_history}")
    if spec.type == "unusual_hour":
        parts.append(f"rare_share={spec.rare_share:g}")
    if spec.action != "alert":
        parts.append(f"ttl={format_duration(spec.lock_ttl)}")
    return " ".join(parts)


def add_risk_routes(app: web.Application, auth: AuthServer) -> None:
    def config() -> RiskConfig:
        return auth.deps.risk or RiskConfig()

    async def rules(call: Call[Empty]) -> r.RiskRules:
        await call.guard.require("risk_rule", "list")
        status, cursor = await rule_status(config(), auth.store("risk_rule"), auth.deps.backend)
        rows = [
            r.RiskRuleRow(
                name=s.name,
                type=s.spec.type,
                enabled=s.spec.enabled,
                action=s.spec.action,
                builtin=s.builtin,
                settings=settings_text(s.spec),
                users=s.spec.users,
                last_fired=s.last_fired,
                last_subject=s.last_subject,
            )  # fmt: skip
            for s in status
        ]
        return r.RiskRules(rules=rows, cursor=cursor)

    async def test(call: Call[r.RiskTest]) -> r.RiskTestReply:
        await call.guard.require("risk_rule", "list")
        await call.guard.require("event", "list")
        since = auth.clock.now() - timedelta(seconds=call.body.since_seconds)
        in_force = await rule_set(config(), auth.store("risk_rule"))
        signals, read = await replay(in_force, auth.audit, since, learn=REPLAY_LEARN)
        return r.RiskTestReply(
            events=read,
            signals=[
                r.RiskSignalRow(
                    time=s.time.isoformat(),
                    rule=s.rule,
                    subject=s.subject,
                    action=s.action,
                    message=s.message,
                    evidence=list(s.evidence),
                )  # fmt: skip
                for s in signals
            ],
        )

    bind(app, r.RISK_RULES, rules)
    bind(app, r.RISK_TEST, test)
