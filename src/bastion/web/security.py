"""Browser security for the login pages: headers, cookies and CSRF tokens.

Layer: web (pure helpers over aiohttp request/response objects; no I/O).

* :func:`security_headers`: a Content-Security-Policy that allows only our own scripts and
  styles (no inline script), forms to ourselves (plus, per response, the IdP a form leads to),
  no framing; ``no-store`` caching, no referrer, no MIME sniffing.
* Cookies are always ``HttpOnly; Secure`` with an explicit ``SameSite``.
* CSRF: double submit. A random token lives in an HttpOnly ``SameSite=Strict`` cookie and in
  each form; a POST is accepted only when both are present and equal (constant-time).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from aiohttp import web

from bastion.errors import AccessDenied
from bastion.services.credentials import new_secret, secrets_equal

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "check_csrf",
    "content_security_policy",
    "csrf_token",
    "security_headers",
    "set_cookie",
]

CSRF_COOKIE = "bastion_csrf"
CSRF_FIELD = "csrf_token"


def content_security_policy(form_targets: Iterable[str] = (), style_nonce: str = "") -> str:
    """``style_nonce``: also allow ``<style>`` elements carrying this nonce (the web terminal's
    xterm.js writes its measured cell sizes that way); never inline scripts."""
    form_action = " ".join(["'self'", *form_targets])
    style = f"'self' 'nonce-{style_nonce}'" if style_nonce else "'self'"
    return (
        f"default-src 'none'; script-src 'self'; style-src {style}; img-src 'self'; "
        f"connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def security_headers(response: web.StreamResponse, form_targets: Iterable[str] = ()) -> None:
    response.headers["Content-Security-Policy"] = content_security_policy(form_targets)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


def set_cookie(
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: int,
    path: str = "/web/",
    samesite: Literal["Strict", "Lax", "None"] = "Strict",
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=True, httponly=True, samesite=samesite
    )


def csrf_token(request: web.Request, response_cookies: dict[str, str]) -> str:
    """The browser's CSRF token; a new one is put in ``response_cookies`` when it has none."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) < 32:
        token = new_secret(24)
        response_cookies[CSRF_COOKIE] = token
    return token


def check_csrf(request: web.Request, form_value: str) -> None:
    """Raises: AccessDenied when the form's token is missing or not the cookie's."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not form_value or not secrets_equal(cookie, form_value):
        raise AccessDenied("the form expired or came from another site (CSRF check); reload")
