"""The admin pages' JSON: the MFA begin body names only an admin page and forbids extras."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.web_admin import WEB_ADMIN_MFA_BEGIN, WEB_RECORDING_CAST, AdminMFABegin


def test_begin_body_is_an_admin_page_action() -> None:
    body = AdminMFABegin(action="/web/admin/users/a%40b/reset", fields={"x": "1"})
    assert body.fields == {"x": "1"}
    for bad in ("/v1/users", "https://evil/web/admin/x", "/web/admin/", "/web/admin/a b"):
        with pytest.raises(ValidationError):
            AdminMFABegin(action=bad)
    with pytest.raises(ValidationError):
        AdminMFABegin.model_validate({"action": "/web/admin/users", "scope": "admin:x"})


def test_both_are_browser_endpoints() -> None:
    assert WEB_ADMIN_MFA_BEGIN.audience == WEB_RECORDING_CAST.audience == "web"
    assert WEB_RECORDING_CAST.stream == "application/x-asciicast"
    assert WEB_RECORDING_CAST.url(session_id="s/1") == "/web/recordings/s%2F1/cast"
