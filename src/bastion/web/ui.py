"""The layout of the web UI's application pages (resources, terminal): wider than the sign-in
pages, with their own stylesheet and, where a page needs one, vendor assets from npm.

Layer: web (pure helpers over aiohttp responses).
"""

from __future__ import annotations

import html

from aiohttp import web

from bastion.web.pages import Raw, render
from bastion.web.security import content_security_policy, security_headers

__all__ = ["app_page"]


def app_page(
    title: str,
    body: Raw,
    *,
    status: int = 200,
    styles: tuple[str, ...] = ("/web/static/web.css",),
    scripts: tuple[str, ...] = (),
    style_nonce: str = "",
) -> web.Response:
    """A full HTML page. ``styles`` and ``scripts`` are URLs on this origin (no inline code);
    ``style_nonce`` lets a library's runtime ``<style>`` elements in (xterm.js measures the
    terminal and writes its cell sizes that way) without allowing inline styles in general."""
    links = "".join(f'<link rel="stylesheet" href="{html.escape(s)}">' for s in styles)
    tags = "".join(f'<script src="{html.escape(s)}" defer></script>' for s in scripts)
    text = render("app.html", title=title, body=body, styles=Raw(links), scripts=Raw(tags))
    response = web.Response(text=text, status=status, content_type="text/html")
    security_headers(response)
    if style_nonce:
        response.headers["Content-Security-Policy"] = content_security_policy(
            style_nonce=style_nonce
        )
    return response
