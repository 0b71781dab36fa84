"""The application pages' layout: our own stylesheet and scripts by URL, strict CSP headers, a
style nonce only where asked for."""

from __future__ import annotations

from bastion.web.pages import Raw
from bastion.web.ui import app_page


def test_app_page_links_assets_and_sets_the_csp() -> None:
    response = app_page("T <x>", Raw("<p>body</p>"), scripts=("/web/static/terminal.js",))
    text = response.text or ""
    assert "<title>T &lt;x&gt; · Bastion</title>" in text
    assert '<script src="/web/static/terminal.js" defer></script>' in text
    assert '<link rel="stylesheet" href="/web/static/web.css">' in text
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert response.headers["X-Frame-Options"] == "DENY"


def test_style_nonce_goes_into_the_csp_only() -> None:
    response = app_page("T", Raw(""), style_nonce="n0nce")
    assert "style-src 'self' 'nonce-n0nce'" in response.headers["Content-Security-Policy"]
    assert "n0nce" not in (response.text or "")
