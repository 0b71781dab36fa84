from __future__ import annotations

import pytest
from aiohttp import web

from bastion.web.pages import Raw, page, render, static_file


def test_values_are_escaped_but_raw_fragments_are_not() -> None:
    html = render("message.html", css="error", message="<script>x</script>", details=Raw("<b>"))
    assert "&lt;script&gt;" in html and "<script>" not in html and "<b>" in html


def test_page_has_headers_and_no_inline_script() -> None:
    response = page("T", "message.html", css="ok", message="m", details="", scripts=("a.js",))
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.text and '<script src="/web/static/a.js" defer></script>' in response.text
    assert "<script>" not in response.text


def test_static_files_are_served_by_name_only() -> None:
    assert static_file("login.css").content_type == "text/css"
    for bad in ("../app.py", "app.py", ".hidden.js", "nope.js", "a/b.css"):
        with pytest.raises(web.HTTPNotFound):
            static_file(bad)
