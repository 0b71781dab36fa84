"""Who each HTTP route is for: the route table the authentication gate enforces.

Layer: api (data only). API endpoints declare their audience in the contract
(:mod:`bastion.contract`); the browser pages are listed here. The middleware refuses a route
that has no audience (fail closed), and ``tests/unit/auth/test_audiences.py`` enumerates the
app's router so that a route added without one fails the build instead of going out
unguarded. ``HEAD`` is answered like ``GET``.
"""

from __future__ import annotations

from bastion.contract import ENDPOINTS
from bastion.contract.base import Audience

__all__ = ["PAGE_AUDIENCES", "ROUTE_AUDIENCES", "audience_of"]

PAGE_AUDIENCES: dict[tuple[str, str], Audience] = {
    # ---- redirects to the pages ----------------------------------------------------------------
    ("GET", "/"): "public",
    ("GET", "/web"): "public",
    # ---- browser pages: the session cookie (when present) passes the gate ----------------------
    ("GET", "/web/static/{name}"): "web",
    ("GET", "/web/login"): "web",
    ("POST", "/web/login"): "web",
    ("GET", "/web/"): "web",
    ("GET", "/web/invite/{token}"): "web",
    ("POST", "/web/logout"): "web",
    ("GET", "/web/sso/{connector}/start"): "web",
    ("POST", "/web/sso/{connector}/start"): "web",
    ("GET", "/web/sso/{connector}/login"): "web",
    ("GET", "/web/sso/{connector}/callback"): "web",
    ("POST", "/web/sso/{connector}/acs"): "web",
    ("GET", "/web/mfa"): "web",
    ("POST", "/web/mfa/register/begin"): "web",
    ("POST", "/web/mfa/register/finish"): "web",
    ("POST", "/web/mfa/verify/begin"): "web",
    ("POST", "/web/mfa/verify/finish"): "web",
    ("POST", "/web/passkey/begin"): "web",
    ("POST", "/web/passkey/finish"): "web",
    ("POST", "/web/login/key/begin"): "web",
    ("POST", "/web/login/key/finish"): "web",
    ("GET", "/web/apps/{name}/launch"): "web",
    ("POST", "/web/apps/{name}/mfa/begin"): "web",
    ("POST", "/web/apps/{name}/mfa/finish"): "web",
    # ---- the web UI: resources and the SSH terminal (docs/web-ui.md) ---------------------------
    ("GET", "/web/nodes"): "web",
    ("GET", "/web/databases"): "web",
    ("GET", "/web/apps"): "web",
    ("GET", "/web/account"): "web",
    ("POST", "/web/account/devices/remove"): "web",
    ("POST", "/web/account/password"): "web",
    ("POST", "/web/account/challenge"): "web",
    ("GET", "/web/ssh"): "web",
    ("GET", "/web/ssh/ws"): "web",
    ("GET", "/web/ssh/files"): "web",
    ("POST", "/web/ssh/files"): "web",
    ("GET", "/web/admin/tokens"): "web",
    ("POST", "/web/admin/tokens"): "web",
    ("POST", "/web/admin/tokens/{name}/delete"): "web",
    ("GET", "/web/admin/connectors"): "web",
    ("GET", "/web/vendor/{name}"): "web",
    # ---- the web UI: recordings, live sessions, administration (docs/web-ui.md) ----------------
    ("GET", "/web/recordings"): "web",
    ("GET", "/web/recordings/{session_id}"): "web",
    ("GET", "/web/sessions"): "web",
    ("POST", "/web/sessions/{session_id}/terminate"): "web",
    ("GET", "/web/sessions/{session_id}/join"): "web",
    ("GET", "/web/sessions/{session_id}/join/ws"): "web",
    ("GET", "/web/admin/users"): "web",
    ("POST", "/web/admin/users"): "web",
    ("POST", "/web/admin/users/{name}/reset"): "web",
    ("GET", "/web/admin/users/{name}/delete"): "web",
    ("POST", "/web/admin/users/{name}/delete"): "web",
    ("GET", "/web/admin/roles"): "web",
    ("GET", "/web/admin/roles/new"): "web",
    ("POST", "/web/admin/roles/new"): "web",
    ("GET", "/web/admin/roles/{name}"): "web",
    ("POST", "/web/admin/roles/{name}"): "web",
    ("GET", "/web/admin/roles/{name}/preview"): "web",
    ("POST", "/web/admin/roles/{name}/preview"): "web",
    ("GET", "/web/admin/locks"): "web",
    ("POST", "/web/admin/locks"): "web",
    ("POST", "/web/admin/locks/{name}/delete"): "web",
    ("GET", "/web/requests"): "web",
    ("POST", "/web/requests"): "web",
    ("GET", "/web/requests/{name}"): "web",
    ("POST", "/web/requests/{name}/review"): "web",
    ("POST", "/web/requests/{name}/delete"): "web",
    ("GET", "/web/admin/audit"): "web",
    ("GET", "/web/admin/audit/event"): "web",
    ("GET", "/web/admin/audit/export"): "web",
}
"""The browser pages (HTML forms and their ceremonies, not JSON API endpoints)."""

ROUTE_AUDIENCES: dict[tuple[str, str], Audience] = {
    **PAGE_AUDIENCES,
    **{endpoint.key: endpoint.audience for endpoint in ENDPOINTS},
}
"""Every route: the pages above and each API endpoint's declared audience (the contract)."""


def audience_of(method: str, path_template: str | None) -> Audience | None:
    """The declared audience of a route (by its template), or None when it is not declared.

    ``path_template`` is None for a path no route matches: such a request still needs an
    identity ("any") before it learns that nothing is there.
    """
    if path_template is None:
        return "any"
    return ROUTE_AUDIENCES.get(("GET" if method == "HEAD" else method, path_template))
