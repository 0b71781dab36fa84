"""Who each HTTP route is for: the route table the authentication gate enforces.

Layer: auth (data only). Every route the auth/proxy web app registers must be listed here; the
middleware refuses a route that is not (fail closed), and ``tests/unit/auth/test_audiences.py``
enumerates the app's router so that a route added without an entry fails the build instead of
going out unguarded. ``HEAD`` is answered like ``GET``.
"""

from __future__ import annotations

from bastion.auth.gate import Audience

__all__ = ["ROUTE_AUDIENCES", "audience_of"]

ROUTE_AUDIENCES: dict[tuple[str, str], Audience] = {
    # ---- no identity: logins, invites, joins, discovery ----------------------------------------
    ("GET", "/v1/ping"): "public",
    ("GET", "/openapi.json"): "public",
    ("POST", "/v1/login"): "public",
    ("POST", "/v1/login/begin"): "public",
    ("POST", "/v1/login/passwordless/begin"): "public",
    ("POST", "/v1/login/passwordless"): "public",
    ("POST", "/v1/invites/start"): "public",
    ("POST", "/v1/invites/complete"): "public",
    ("POST", "/v1/invites/webauthn"): "public",
    ("POST", "/v1/join"): "public",
    ("POST", "/v1/sso/requests"): "public",
    ("POST", "/v1/sso/requests/{id}/result"): "public",
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
    # ---- people (users, bots, the local admin) --------------------------------------------------
    ("POST", "/v1/users"): "user",
    ("PATCH", "/v1/users/{name}"): "user",
    ("POST", "/v1/users/{name}/reset"): "user",
    ("POST", "/v1/tokens"): "user",
    ("GET", "/v1/ca/export"): "user",
    ("POST", "/v1/ca/rotate"): "user",
    ("POST", "/v1/ca/sign-host"): "user",
    ("POST", "/v1/nodes/{name}/confirm"): "user",
    ("GET", "/v1/events"): "user",
    ("POST", "/v1/audit/checkpoint"): "user",
    ("GET", "/v1/audit/proof"): "user",
    ("POST", "/v1/certs/session/challenge"): "user",
    ("POST", "/v1/certs/session"): "user",
    ("GET", "/v1/mfa/devices"): "user",
    ("POST", "/v1/mfa/devices/begin"): "user",
    ("POST", "/v1/mfa/devices/finish"): "user",
    ("POST", "/v1/mfa/devices/{name}/remove"): "user",
    ("POST", "/v1/mfa/challenge"): "user",
    ("GET", "/v1/recordings"): "user",
    ("GET", "/v1/recordings/{session_id}"): "user",
    ("GET", "/v1/access/check"): "user",
    ("GET", "/v1/access/ls"): "user",
    ("GET", "/v1/access/who"): "user",
    # ---- agents and proxies ---------------------------------------------------------------------
    ("POST", "/v1/nodes/heartbeat"): "host",
    ("POST", "/v1/proxies/heartbeat"): "host",
    ("POST", "/v1/nodes/pin"): "host",
    ("POST", "/v1/events/submit"): "host",
    ("POST", "/v1/recordings/{session_id}"): "host",
    # ---- both: reads agents share with users; writes are confined per identity in GuardedAuth ---
    ("GET", "/v1/whoami"): "any",
    ("GET", "/v1/ca/krl"): "any",
    ("GET", "/v1/watch"): "any",
    ("GET", "/v1/resources/{kind}"): "any",
    ("GET", "/v1/resources/{kind}/{name}"): "any",
    ("POST", "/v1/resources/{kind}"): "any",
    ("PUT", "/v1/resources/{kind}/{name}"): "any",
    ("DELETE", "/v1/resources/{kind}/{name}"): "any",
}


def audience_of(method: str, path_template: str | None) -> Audience | None:
    """The declared audience of a route (by its template), or None when it is not declared.

    ``path_template`` is None for a path no route matches: such a request still needs an
    identity ("any") before it learns that nothing is there.
    """
    if path_template is None:
        return "any"
    return ROUTE_AUDIENCES.get(("GET" if method == "HEAD" else method, path_template))
