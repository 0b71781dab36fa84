"""Host names, paths and redirect targets of app access, decided once and purely.

Layer: ``protocols`` (pure, stdlib only). Used by the proxy's router and app route
(:mod:`bastion.proxy.app_route`) and by the login pages' redirect after sign-in.

* :func:`app_label`: ``grafana.proxy.example.com[:3080]`` under ``proxy.example.com`` ->
  ``grafana``; anything else (deeper names, other domains, odd characters) -> None.
* :func:`normalize_path`: the request path with dot segments removed (``%2e`` counted as a
  dot) and repeated slashes kept; None for a path that is not absolute or carries control
  characters or encoded slashes/backslashes that could be read two ways. The app receives the
  path that the proxy decided on and audited.
* :func:`safe_redirect`: where a browser may be sent after signing in: a local path of the
  proxy's pages, or ``https://`` to one of this cluster's app addresses. Everything else
  (``//evil``, ``https:evil``, ``/\\evil``, encoded forms, user info, other ports' schemes)
  is refused: no open redirect.
* :func:`render_headers`: an app's ``rewrite.headers`` for one user, trait templates
  (``{{internal.logins}}``, ``{{external.team}}``, ``email.local``, ``regexp.replace``: the
  roles' syntax, :mod:`bastion.types.templates`) expanded; several values are joined with
  ``,``; a header whose template expands to nothing is left out, and so is a value that would
  carry a control character (no header injection through a trait).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from bastion.types.apps import AppHeader
from bastion.types.templates import parse_template

__all__ = [
    "app_address",
    "app_label",
    "normalize_path",
    "render_headers",
    "safe_local_path",
    "safe_redirect",
    "split_host",
]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CTL = re.compile(r"[\x00-\x20\x7f\\]")
_ENCODED_BAD = re.compile(r"%(2f|5c|00|0a|0d|09)", re.IGNORECASE)
_HEADER_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def render_headers(
    headers: Sequence[AppHeader],
    traits: Mapping[str, Sequence[str]],
    logins: Sequence[str] = (),
) -> bytes:
    """The encoded header lines (``Name: value\\r\\n`` each) of ``headers`` for a user with
    ``traits`` (``logins``: the certificate's logins, read when the traits have none)."""
    if logins and "logins" not in traits:
        traits = {**traits, "logins": tuple(logins)}
    out = bytearray()
    for header in headers:
        value = header.value
        if "{{" in value or "}}" in value:
            values = parse_template(value).expand(traits)
            if not values:
                continue
            value = ",".join(values)
        if _HEADER_CTL.search(value):
            continue
        out += header.name.encode("ascii") + b": " + value.strip(" \t").encode() + b"\r\n"
    return bytes(out)


def split_host(host: str) -> tuple[str, int | None]:
    """``name[:port]`` -> (lowercase name, port or None); ("", None) when malformed."""
    name, sep, port = host.rpartition(":")
    if not sep or "]" in port:
        name, port = host, ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return "", None
    return name.lower().rstrip("."), int(port) if port else None


def app_label(host: str | None, domain: str) -> str | None:
    """The app name when ``host`` is ``NAME.<domain>`` (port allowed), else None."""
    if not host or not domain:
        return None
    name, _ = split_host(host)
    suffix = "." + domain.lower().rstrip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if _LABEL.match(label) else None


def normalize_path(raw: str) -> str | None:
    """Remove dot segments (RFC 3986 5.2.4) from a request path, counting ``%2e`` as ``.``.

    Returns:
        The normalized path (still percent-encoded otherwise, query excluded), or None when
        the path is not absolute, has control characters or backslashes, or encodes a
        slash, backslash or control character.
    """
    if not raw.startswith("/") or _CTL.search(raw) or _ENCODED_BAD.search(raw):
        return None
    if "/." not in raw and "%" not in raw:
        return raw  # no dot segment can hide in it: nothing to remove
    out: list[str] = []
    segments = raw.split("/")[1:]
    for i, segment in enumerate(segments):
        plain = re.sub(r"%2e", ".", segment, flags=re.IGNORECASE)
        last = i == len(segments) - 1
        if plain == ".":
            if last:
                out.append("")
            continue
        if plain == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    return "/" + "/".join(out)


def safe_local_path(value: str) -> str | None:
    """A path on the proxy's own pages (``/web/...``), or None."""
    if not value or _CTL.search(value) or not value.startswith("/web/"):
        return None
    decoded = unquote(unquote(value))
    if decoded.startswith(("//", "/\\")) or _CTL.search(decoded) or "/../" in decoded:
        return None
    return value


def safe_redirect(value: str, domain: str, port: int | None = None) -> str | None:
    """Where the browser may go after signing in, or None (refused).

    Args:
        value: the requested target (from a query string or form field).
        domain: the proxy's public host name; app addresses are ``NAME.<domain>``.
        port: the proxy's public port when it is not 443 (it must then match).

    Returns:
        ``value`` when it is a local ``/web/`` path or an ``https://NAME.<domain>`` URL of
        this cluster; None otherwise.
    """
    if value.startswith("/"):
        return safe_local_path(value)
    if _CTL.search(value) or not value.lower().startswith("https://"):
        return None
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    if app_label(parts.netloc, domain) is None:
        return None
    _, got_port = split_host(parts.netloc)
    if (got_port or 443) != (port or 443):
        return None
    path = parts.path or "/"
    if normalize_path(path) is None:
        return None
    return value


def app_address(name: str, public_addr: str, proxy_host: str) -> str:
    """``host[:port]`` of app ``name`` under the proxy address ``proxy_host`` (``name[:port]``,
    as a client reached it); ``public_addr`` overrides the host name. A proxy reached by an IP
    address or ``localhost`` serves its apps under ``apps.localhost`` (as
    :func:`bastion.config.apps.app_domain` decides)."""
    domain, port = split_host(proxy_host)
    bare = domain.strip("[]")
    if bare == "localhost" or ":" in bare or bare.replace(".", "").isdigit():
        domain = "apps.localhost"
    base = public_addr or f"{name}.{domain}"
    return f"{base}:{port}" if port and port != 443 else base
