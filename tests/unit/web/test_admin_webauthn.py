"""Admin MFA in the browser: the scope binds one form's action and fields, and the policy is the
API's (require_mfa_for_admin unset: users with a key; true: everyone; false: nobody)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.errors import AccessDenied
from bastion.types.identity import Identity
from bastion.web.admin_webauthn import WebAdminMFA, canonical_fields, web_admin_scope

USER = Identity.model_validate(
    {"cluster": "c", "user": "alice", "roles": ["editor"], "expires": "2099-01-01T00:00:00Z"}
)


def test_scope_binds_action_and_fields_but_not_the_csrf_token() -> None:
    a = web_admin_scope("/web/admin/locks", {"target": "bob", "csrf_token": "x"})
    assert a == web_admin_scope("/web/admin/locks", {"target": "bob", "csrf_token": "y"})
    assert a != web_admin_scope("/web/admin/locks", {"target": "mallory"})
    assert a != web_admin_scope("/web/admin/users", {"target": "bob"})
    assert a.startswith("admin:POST /web/admin/locks ")
    # browsers post textareas with CRLF; the page's script hashes LF
    assert canonical_fields({"yaml": "a\r\nb"}) == canonical_fields({"yaml": "a\nb"})
    assert b"mfa_assertion" not in canonical_fields({"mfa_assertion": "{}", "x": "1"})


class _MFA:
    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.scopes: list[str] = []

    async def list_devices(self, user: str) -> list[Any]:
        return [
            SimpleNamespace(kind="webauthn", id=f"d{i}", name=f"k{i}", usable=True)
            for i in range(self.devices)
        ]

    async def begin_challenge(self, user: str, scope: str) -> dict[str, Any]:
        self.scopes.append(scope)
        return {"challenge": "abc"}

    async def verify_challenge(self, user: str, scope: str, response: dict[str, Any]) -> Any:
        if scope not in self.scopes or response.get("ok") is not True:
            raise AccessDenied("challenge not found or expired")
        return SimpleNamespace(device_id="d0", aaguid="")


class _Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event_type: str, **fields: Any) -> None:
        self.events.append((event_type, fields))


def _auth(setting: bool | None, devices: int) -> Any:
    pref = SimpleNamespace(spec=SimpleNamespace(require_mfa_for_admin=setting, second_factor="on"))

    async def auth_preference() -> Any:
        return pref

    return SimpleNamespace(auth_preference=auth_preference, mfa=_MFA(devices), audit=_Audit())


@pytest.fixture(autouse=True)
def _usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.web.admin_webauthn.usable_webauthn", lambda devices: list(devices))


def test_policy_follows_the_cluster_setting() -> None:
    for setting, devices, expected in (
        (None, 0, False),
        (None, 1, True),
        (True, 0, True),
        (False, 1, False),
    ):
        mfa = WebAdminMFA(_auth(setting, devices))
        assert asyncio.run(mfa.policy(USER))[0] is expected, (setting, devices)


def test_a_change_needs_the_assertion_for_exactly_that_form() -> None:
    auth = _auth(None, 1)
    mfa = WebAdminMFA(auth)
    form = {"target_kind": "user", "target": "bob"}
    with pytest.raises(AccessDenied, match="needs your security key"):
        asyncio.run(mfa.check(USER, "/web/admin/locks", form, "1.2.3.4"))
    answer = asyncio.run(mfa.begin(USER, "/web/admin/locks", form))
    assert answer["required"] is True
    signed = {**form, "mfa_assertion": '{"ok": true}'}
    with pytest.raises(AccessDenied, match="nothing was changed"):  # another target
        asyncio.run(mfa.check(USER, "/web/admin/locks", {**signed, "target": "eve"}, ""))
    asyncio.run(mfa.check(USER, "/web/admin/locks", signed, ""))
    assert [e[1].get("outcome", "success") for e in auth.audit.events] == ["failure", "success"]


def test_required_without_a_key_is_refused_with_where_to_register_one() -> None:
    mfa = WebAdminMFA(_auth(True, 0))
    with pytest.raises(AccessDenied, match="/web/mfa"):
        asyncio.run(mfa.begin(USER, "/web/admin/users", {}))
    assert asyncio.run(WebAdminMFA(_auth(False, 1)).begin(USER, "/web/admin/users", {})) == {
        "required": False
    }
