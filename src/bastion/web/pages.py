"""Server-rendered pages: package-data templates filled with escaped values.

Layer: web (pure). Every value is HTML-escaped; only fragments built here from escaped parts
are inserted raw (the ``Raw`` wrapper). No inline script anywhere: the CSP forbids it.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from string import Template

from aiohttp import web

from bastion.web.security import CSRF_COOKIE, security_headers, set_cookie

__all__ = ["Raw", "not_found", "page", "render", "static_file"]

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


class Raw(str):
    """Markup built from escaped parts; inserted as is."""

    __slots__ = ()


@functools.cache
def _template(name: str) -> Template:
    return Template(resources.files("bastion.web").joinpath("templates", name).read_text())


def render(name: str, **values: str) -> str:
    """Fill ``templates/NAME`` with ``values`` (escaped unless :class:`Raw`)."""
    escaped = {k: v if isinstance(v, Raw) else html.escape(v) for k, v in values.items()}
    return _template(name).substitute(escaped)


WEBAUTHN_SCRIPTS = ("webauthn-codec.js", "webauthn.js")
"""The login pages' WebAuthn ceremonies: the shared codec first (deferred scripts run in order)."""


def page(
    title: str,
    body_template: str,
    *,
    status: int = 200,
    scripts: tuple[str, ...] = (),
    form_targets: tuple[str, ...] = (),
    cookies: dict[str, str] | None = None,
    **values: str,
) -> web.Response:
    """A full HTML response with the security headers (and the CSRF cookie when new)."""
    script_tags = "".join(
        f'<script src="/web/static/{html.escape(s)}" defer></script>' for s in scripts
    )
    body = render(body_template, **values)
    text = render("layout.html", title=title, body=Raw(body), scripts=Raw(script_tags))
    response = web.Response(text=text, status=status, content_type="text/html")
    security_headers(response, form_targets)
    for name, value in (cookies or {}).items():
        if name == CSRF_COOKIE:
            set_cookie(response, name, value, max_age=3600 * 12)
    return response


def static_file(name: str) -> web.Response:
    """``/web/static/NAME`` (only the files shipped in the package; no paths)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound()
    try:
        data = resources.files("bastion.web").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    response = web.Response(body=data, content_type=STATIC_TYPES[suffix])
    security_headers(response)
    response.headers["Cache-Control"] = "no-cache"
    return response


def not_found(path: str) -> web.Response:
    """The styled 404 page for a path under ``/web/`` that no page serves."""
    return page("Page not found", "not_found.html", status=404, path=path[:200])
