"""Who may manage MFA devices through the API (security review)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.api.mfa import _caller, _registrant
from bastion.errors import BadParameter
from bastion.types.identity import Identity


def _request(**update: Any) -> Any:
    identity = Identity(
        cluster="test.local",
        user="alice",
        roles=("access",),
        logins=("alice",),
        expires=datetime.now(UTC) + timedelta(hours=1),
    ).model_copy(update=update)
    return SimpleNamespace(guard=SimpleNamespace(ctx=SimpleNamespace(identity=identity)))


def test_a_local_user_manages_own_devices() -> None:
    assert _caller(_request()) == "alice"


def test_an_sso_user_cannot_register_a_device() -> None:
    """SSO users have no Bastion MFA devices (docs/sso.md): a stolen SSO certificate could
    otherwise register the thief's key as the first device (no proof is asked for a first one)
    and then pass per-session and admin MFA with it."""
    sso = _request(
        user="okta:alice",
        traits={"sso_connector": ("okta",), "sso_subject": ("00u1",)},
    )
    assert _caller(sso) == "okta:alice"  # listing (empty) is fine
    with pytest.raises(BadParameter, match="identity provider"):
        _registrant(sso)
    assert _registrant(_request()) == "alice"


@pytest.mark.parametrize("kind", ["host", "admin", "bot"])
def test_hosts_admins_and_bots_own_no_devices(kind: str) -> None:
    with pytest.raises(BadParameter, match="belong to users"):
        _caller(_request(kind=kind))


def test_the_challenge_endpoint_hands_out_device_change_scopes_only() -> None:
    from bastion.api.mfa import _device_change_scope

    assert _device_change_scope("mfa:add") == "mfa:add"
    assert _device_change_scope("mfa:remove:yubi") == "mfa:remove:yubi"
    for scope in ("session:web1:root", "admin:PUT /v1/resources/role/x abc", "login", ""):
        with pytest.raises(BadParameter, match="mfa:add"):
            _device_change_scope(scope)
