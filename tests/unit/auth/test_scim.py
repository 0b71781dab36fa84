"""The deprovisioning lock: names the SSO user, SCIM's own, expiring only after a deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.auth.scim import deprovision_lock, deprovision_lock_name

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_deprovision_lock() -> None:
    held = deprovision_lock("okta", "alice@example.com", "deactivated", NOW, None)
    assert held.spec.target.user == "okta:alice@example.com"
    assert held.spec.created_by == "scim:okta" and held.metadata.expires is None
    assert held.name == deprovision_lock_name("okta", "alice@example.com")
    gone = deprovision_lock("okta", "alice@example.com", "deleted", NOW, timedelta(hours=12))
    assert gone.metadata.expires == NOW + timedelta(hours=12)
    assert deprovision_lock_name("okta", "a") != deprovision_lock_name("entra", "a")
