from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bastion.errors import AccessDenied
from bastion.web.security import (
    CSRF_COOKIE,
    check_csrf,
    content_security_policy,
    csrf_token,
    security_headers,
    set_cookie,
)


def request(cookie: str = "") -> web.Request:
    headers = {"Cookie": f"{CSRF_COOKIE}={cookie}"} if cookie else {}
    return make_mocked_request("POST", "/web/login", headers=headers)


def test_csp_forbids_inline_script_and_framing() -> None:
    csp = content_security_policy(["https://idp.example.com"])
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://idp.example.com" in csp


def test_headers_and_cookie_flags() -> None:
    response = web.Response()
    security_headers(response)
    set_cookie(response, "c", "v", max_age=60, samesite="Lax")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.cookies["c"].OutputString()
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_csrf_token_is_reused_or_created() -> None:
    created: dict[str, str] = {}
    token = csrf_token(request(), created)
    assert created[CSRF_COOKIE] == token and len(token) >= 32
    kept: dict[str, str] = {}
    assert csrf_token(request("x" * 40), kept) == "x" * 40 and not kept


@pytest.mark.parametrize(("cookie", "form"), [("", ""), ("a" * 40, ""), ("a" * 40, "b" * 40)])
def test_csrf_mismatch_is_refused(cookie: str, form: str) -> None:
    with pytest.raises(AccessDenied, match="CSRF"):
        check_csrf(request(cookie), form)


def test_csrf_match_passes() -> None:
    check_csrf(request("a" * 40), "a" * 40)
