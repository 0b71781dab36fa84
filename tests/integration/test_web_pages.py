"""The web pages over HTTPS from the real daemon (issue 12 item 9): no empty card, commands that
wrap, MFA devices by kind and name, a styled 404 under /web/ (the API gate unchanged for /v1),
and invite links that say when they were used or withdrawn."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from harness import Cluster, Env, fresh_totp, unique, unverified_context

pytestmark = pytest.mark.integration


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=unverified_context()),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )


def _get(
    cluster: Cluster, path: str, opener: urllib.request.OpenerDirector | None = None
) -> tuple[int, dict[str, str], str]:
    try:
        with (opener or _opener()).open(f"https://{cluster.proxy}{path}", timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_the_login_page_has_no_empty_card_and_commands_wrap(cluster: Cluster) -> None:
    status, _, page = _get(cluster, "/web/login")
    assert status == 200
    assert not re.search(r'<section class="card"[^>]*>\s*</section>', page)  # no SSO: no card
    status, _, css = _get(cluster, "/web/static/login.css")
    assert status == 200
    rule = next(line for line in css.splitlines() if line.startswith("pre, code"))
    assert "overflow-wrap: anywhere" in rule and "white-space: pre-wrap" in rule


def test_unknown_web_pages_get_the_styled_404_and_v1_keeps_its_gate(cluster: Cluster) -> None:
    status, headers, page = _get(cluster, "/web/no/such/page")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "<title>Page not found · Bastion</title>" in page
    assert 'href="/web/static/login.css"' in page and "/web/no/such/page" in page
    assert "script-src" in headers["Content-Security-Policy"]
    status, _, page = _get(cluster, "/web/%3Cscript%3Ealert(1)")
    assert status == 404 and "<script>" not in page
    status, headers, body = _get(cluster, "/v1/no/such/endpoint")  # no certificate: refused
    assert status in (401, 403) and headers["Content-Type"].startswith("application/json")
    assert "Page not found" not in body and json.loads(body)


def test_the_invite_page_says_when_an_invite_was_used_or_withdrawn(env: Env) -> None:
    cluster = env.cluster
    user, invite = env.add_user("access", "x")
    path = f"/web/invite/{invite['token']}"
    status, _, page = _get(cluster, path)
    assert status == 200 and "bsh login" in page
    assert env.accept_invite(user, invite["token"]).returncode == 0
    status, _, page = _get(cluster, path)
    assert status == 410 and "already been used" in page and "bsh login --proxy" not in page
    other, old = env.add_user("access", "x")
    env.admin_ok("users", "reset", other.name)  # a new invite withdraws the old one
    status, _, page = _get(cluster, f"/web/invite/{old['token']}")
    assert status == 410 and "withdrawn" in page
    status, _, page = _get(cluster, f"/web/invite/{unique('nosuch')}")
    assert status == 404 and "not valid" in page


def test_the_mfa_page_names_the_device_kind_and_name_not_its_id(env: Env) -> None:
    user = env.new_user("access", "x")
    opener = _opener()
    _, _, login = _get(env.cluster, "/web/login", opener)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf
    form = urllib.parse.urlencode(
        {
            "csrf_token": csrf.group(1),
            "user": user.name,
            "password": user.password,
            "otp": fresh_totp(user),
        }
    ).encode()
    with opener.open(f"https://{env.cluster.proxy}/web/login", data=form, timeout=10) as resp:
        assert resp.status == 200 and resp.url.endswith("/web/")
    status, _, page = _get(env.cluster, "/web/mfa", opener)
    assert status == 200
    assert "Verified with your authenticator app &quot;otp&quot; in this session." in page
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-", page)  # no device id
