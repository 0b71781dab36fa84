"""The account page's pure parts: the device list (kind and name, escaped), the scopes a page
may ask a challenge for, the password form's inline error."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.errors import BadParameter
from bastion.types.mfa import MFADevice
from bastion.web.account import PASSWORD_SCOPE, device_rows, password_form, scope_for

ADDED = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
EVIL = "<img src=x onerror=alert(1)>"


def _ctx() -> Any:
    return SimpleNamespace(csrf="tok")


def _device(name: str, kind: str = "webauthn", passkey: bool = False) -> MFADevice:
    return MFADevice(
        id="0b7c4c1e-uuid",
        user="alice",
        name=name,
        type=kind,
        added=ADDED,
        passwordless=passkey,
    )


def test_devices_are_listed_by_kind_and_name_escaped() -> None:
    html = device_rows(_ctx(), [_device(EVIL), _device("otp", "totp"), _device("pk", passkey=True)])
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "authenticator app" in html and "passkey" in html and "security key" in html
    assert "0b7c4c1e-uuid" not in html  # never the id
    assert html.count('action="/web/account/devices/remove"') == 3
    assert html.count('name="csrf_token" value="tok"') == 3
    assert 'data-scope="mfa:remove:otp"' in html
    assert "2026-01-02 03:04 UTC" in html and "never" in html


def test_no_devices_is_an_empty_state() -> None:
    assert "No MFA devices yet" in device_rows(_ctx(), [])


def test_challenge_scopes_are_the_password_or_one_of_the_users_devices() -> None:
    devices = [_device("key1")]
    assert scope_for(PASSWORD_SCOPE, devices) == PASSWORD_SCOPE
    assert scope_for("mfa:remove:key1", devices) == "mfa:remove:key1"
    for scope in ("mfa:remove:other", "mfa:add", "admin:POST /x", "login", ""):
        with pytest.raises(BadParameter, match="scope must be"):
            scope_for(scope, devices)


def test_password_form_shows_the_error_inline_escaped() -> None:
    html = password_form(_ctx(), error=f"password too short {EVIL}")
    assert 'role="alert"' in html and "password too short &lt;img" in html
    assert 'action="/web/account/password"' in html and 'value="tok"' in html
    assert 'role="status"' in password_form(_ctx(), done="Password changed.")


def test_every_account_route_is_a_web_page() -> None:
    from aiohttp import web

    from bastion.api.audiences import PAGE_AUDIENCES
    from bastion.web.account import add_account_routes

    app = web.Application()
    shell: Any = SimpleNamespace(auth=None)
    add_account_routes(app, shell)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert len(routes) >= 4
    for route in routes - {("HEAD", "/web/account")}:
        assert PAGE_AUDIENCES.get(route) == "web", route
