"""The ``risk:`` section of the configuration file: static rules over the audit stream.

Layer: ``config`` (pydantic; no IO). :mod:`bastion.auth.risk` evaluates the rules. A rule with
``lock_ttl`` set also locks its subject user for that long; otherwise it only emits
``risk.signal`` events (which the audit export forwards like any event). docs/risk.md.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from bastion.types.duration import Duration
from bastion.types.meta import StrictModel

__all__ = ["AdminNewSourceRule", "BurstRule", "RiskConfig"]


class BurstRule(StrictModel):
    enabled: bool = True
    threshold: int = Field(default=10, ge=1, le=100_000)
    """Events within ``window`` that fire the rule."""
    window: Duration = timedelta(minutes=5)
    lock_ttl: Duration | None = None
    """Lock the subject user for this long when the rule fires (rules about a user only)."""


class AdminNewSourceRule(StrictModel):
    enabled: bool = True
    admin_roles: list[str] = Field(default_factory=lambda: ["editor"])
    """A login carrying any of these roles is an admin login."""
    lock_ttl: Duration | None = None


class RiskConfig(StrictModel):
    enabled: bool = True
    interval: Duration = timedelta(seconds=1)
    """How often the evaluator reads new audit events."""
    failed_logins: BurstRule = Field(default_factory=BurstRule)
    """N failed logins (``user.login``, ``sso.login``) from one source address in a window.
    Alert only: a lock cannot name a source address."""
    denied_burst: BurstRule = Field(
        default_factory=lambda: BurstRule(threshold=20, window=timedelta(minutes=1))
    )
    """N refusals (``access.denied``) of one user in a window."""
    admin_new_source: AdminNewSourceRule = Field(default_factory=AdminNewSourceRule)
    """An admin change right after a login from a device or network this user never used.
    Every rule type, and overrides of these three, are ``risk_rule`` resources (docs/risk.md)."""
