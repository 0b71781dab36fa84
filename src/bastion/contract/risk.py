"""Risk rules on the API: ``bctl risk ls`` and ``bctl risk test`` (docs/risk.md).

Layer: contract. Rules themselves are ``risk_rule`` resources (``bctl create -f``, ``bctl get
risk_rules``); these endpoints show the rules in force with their state and replay the audit
log through them without committing anything.
"""

from __future__ import annotations

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply

__all__ = ["RISK_RULES", "RISK_TEST", "RiskRuleRow", "RiskRules", "RiskSignalRow", "RiskTest",
           "RiskTestReply"]  # fmt: skip


class RiskRuleRow(Reply):
    name: str
    type: str
    enabled: bool
    action: str
    builtin: bool
    """A built-in rule (not replaced by a stored ``risk_rule``)."""
    settings: str
    """The thresholds in force, e.g. ``threshold=10 window=5m``."""
    users: list[str] = []
    last_fired: str = ""
    last_subject: str = ""


class RiskRules(Reply):
    rules: list[RiskRuleRow]
    cursor: int | None = None
    """The evaluator's next audit index (None: it has not started yet)."""


class RiskTest(Body):
    since_seconds: int = Field(default=86_400, ge=1, le=366 * 86_400)


class RiskSignalRow(Reply):
    time: str
    rule: str
    subject: str
    action: str
    message: str
    evidence: list[str]


class RiskTestReply(Reply):
    events: int
    """Events replayed."""
    signals: list[RiskSignalRow]


RISK_RULES = Endpoint(
    "GET",
    "/v1/risk/rules",
    "user",
    "The risk rules in force, their settings and when each last fired (needs list on risk_rule)",
    body=Empty,
    response=RiskRules,
    tags=("risk",),
)
RISK_TEST = Endpoint(
    "POST",
    "/v1/risk/test",
    "user",
    "Replay the audit log through the risk rules; changes nothing (needs list on risk_rule "
    "and event)",
    body=RiskTest,
    response=RiskTestReply,
    tags=("risk",),
)
