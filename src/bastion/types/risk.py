"""``risk_rule`` resources: one rule of the risk engine over the audit stream (docs/risk.md).

Layer: types. A rule names its ``type`` (what it looks for), its thresholds (zero: the type's
default, :data:`DEFAULTS`), the ``users`` it watches (glob patterns; empty: everyone) and its
``action``: ``alert`` (a ``risk.signal`` event only), ``step_up`` (the user's next certificate
needs a second factor) or ``lock`` (the user, for ``lock_ttl``). The engine has a built-in rule
of each type (named after it); a stored rule of the same name replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from bastion.types.duration import Duration
from bastion.types.meta import Resource, StrictModel

__all__ = ["DEFAULTS", "RULE_TYPES", "RiskRule", "RiskRuleSpec", "RuleDefaults"]

RuleType = Literal[
    "failed_logins",
    "denied_burst",
    "new_source",
    "unusual_hour",
    "concurrent_networks",
    "admin_new_source",
    "lateral_movement",
]
RULE_TYPES: tuple[str, ...] = RuleType.__args__  # type: ignore[attr-defined]
Action = Literal["alert", "step_up", "lock"]


@dataclass(frozen=True, slots=True)
class RuleDefaults:
    threshold: int = 0
    window: timedelta = timedelta(0)
    min_history: int = 0
    rare_share: float = 0.0
    what: str = ""


DEFAULTS: dict[str, RuleDefaults] = {
    "failed_logins": RuleDefaults(
        threshold=10, window=timedelta(minutes=5),
        what="N failed logins from one source address within a window (alert only)",
    ),
    "denied_burst": RuleDefaults(
        threshold=20, window=timedelta(minutes=1),
        what="N refusals (access.denied) of one user within a window",
    ),
    "new_source": RuleDefaults(
        min_history=3,
        what="a login from a device or source network (/24, /48) the user never used, once "
        "the user has min_history logins",
    ),
    "unusual_hour": RuleDefaults(
        min_history=20, rare_share=0.02,
        what="a login at an hour (UTC, +-1 h) that holds under rare_share of the user's "
        "logins, once the user has min_history logins",
    ),
    "concurrent_networks": RuleDefaults(
        window=timedelta(minutes=5),
        what="one certificate (serial) used from two source networks within a window",
    ),
    "admin_new_source": RuleDefaults(
        window=timedelta(minutes=10),
        what="an admin action within a window after a login from a new device or network",
    ),
    "lateral_movement": RuleDefaults(
        threshold=10, window=timedelta(minutes=5),
        what="sessions of one user to N distinct nodes within a window",
    ),
}  # fmt: skip
"""Each type's thresholds when a rule leaves them at zero, and what it looks for."""


class RiskRuleSpec(StrictModel):
    type: RuleType
    enabled: bool = True
    action: Action = "alert"
    lock_ttl: Duration = timedelta(minutes=15)
    """``lock``: how long the user stays locked. ``step_up``: how long the MFA demand waits for
    the user's next certificate (then it lapses)."""
    threshold: int = Field(default=0, ge=0, le=100_000)
    window: Duration = timedelta(0)
    min_history: int = Field(default=0, ge=0, le=100_000)
    """Logins a user needs before ``new_source`` / ``unusual_hour`` judge them."""
    rare_share: float = Field(default=0.0, ge=0.0, le=1.0)
    admin_roles: list[str] = Field(default_factory=lambda: ["editor"])
    """Unused by the engine since ``admin_new_source`` watches admin *actions*; kept so older
    ``risk:`` configurations still load."""
    users: list[str] = Field(default_factory=list)
    """Glob patterns of the users the rule watches (empty: all)."""

    @model_validator(mode="after")
    def _check(self) -> RiskRuleSpec:
        if self.type == "failed_logins" and self.action != "alert":
            raise ValueError("failed_logins is about a source address: its action is alert")
        if self.window < timedelta(0) or self.lock_ttl <= timedelta(0):
            raise ValueError("window must not be negative and lock_ttl must be positive")
        return self

    def resolved(self) -> RiskRuleSpec:
        """This spec with the type's defaults filled in for zero thresholds."""
        d = DEFAULTS[self.type]
        return self.model_copy(
            update={
                "threshold": self.threshold or d.threshold,
                "window": self.window or d.window,
                "min_history": self.min_history or d.min_history,
                "rare_share": self.rare_share or d.rare_share,
            }
        )


class RiskRule(Resource):
    KIND: ClassVar[str] = "risk_rule"
    kind: str = "risk_rule"
    spec: RiskRuleSpec
