"""Application access: the JWT key set, the apps a user may reach, app certificates.

Layer: contract (pure pydantic). Served by :mod:`bastion.api.apps`; the work is in
:mod:`bastion.auth.apps`. docs/app-access.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply, ResourceDoc
from bastion.contract.core import Duration, Name, Text

__all__ = [
    "APP_AUTHORIZE",
    "APP_CERT",
    "APP_HEARTBEAT",
    "APP_SESSION",
    "APP_SESSION_END",
    "APP_MFA_CERT",
    "APP_MFA_CHALLENGE",
    "JWKS",
    "LIST_APPS",
    "AppCert",
    "AppCertRequest",
    "AppInfo",
    "AppList",
    "AppMfaCertRequest",
    "AppMfaChallenge",
    "AppMfaTarget",
    "AppAuthorizeRequest",
    "AppAuthorized",
    "AppSessionFound",
    "AppSessionRequest",
    "AppsQuery",
    "Jwks",
]


class Jwks(Reply):
    keys: list[dict[str, Any]]
    """JSON Web Keys (RFC 7517) of the cluster's ``jwt`` CA: public parts only."""


class AppsQuery(Body):
    labels: str = ""
    """``k=v,k2=v2``: only apps with these labels."""


class AppInfo(Reply):
    name: str
    public_addr: str
    """The host name to open (``NAME.<proxy>`` unless the app sets its own)."""
    labels: dict[str, str] = {}
    protocol: str = "http"
    """``http`` (open ``https://public_addr``) or ``tcp`` (``bsh proxy app NAME``)."""


class AppList(Reply):
    apps: list[AppInfo]


class AppCertRequest(Body):
    app: Name
    public_key: Text
    ttl: Duration = timedelta(hours=12)
    """Capped by the caller's own certificate."""


class AppCert(Reply):
    cert: str
    """PEM certificate routed to the app (user TLS CA)."""
    ca: str
    """PEM bundle to verify the proxy (host TLS CA)."""
    expires: str
    public_addr: str


class AppMfaTarget(Body):
    app: Name


class AppMfaChallenge(Reply):
    mfa_required: bool
    scope: str = ""
    """``app:NAME``: what the answer authorizes."""
    challenge: dict[str, Any] | None = None
    """WebAuthn request options (None when the user has no usable security key)."""
    totp: bool = False
    """A TOTP code may answer instead."""


class AppMfaCertRequest(Body):
    app: Name
    public_key: Text
    mfa_response: dict[str, Any] | None = None
    """The WebAuthn assertion for the challenge's scope."""
    otp: str = ""
    """Or a TOTP code."""


class AppSessionRequest(Body):
    """A proxy in its own process asks about a browser's app session (its cookie's token), or
    redeems a launch code for one (exactly one of the two)."""

    app: str = Field("", max_length=253)
    token: str = Field("", max_length=256)
    code: str = Field("", max_length=256)


class AppSessionFound(Reply):
    found: bool
    token: str = ""
    """The session token (a redeemed code's new session)."""
    id: str = ""
    identity: dict[str, Any] | None = None
    expires: datetime | None = None


class AppAuthorizeRequest(Body):
    """A proxy in its own process: may this identity (verified by the proxy: a session's, or
    a user certificate's) reach the app; if so, the app and its signed assertion."""

    app: Name
    identity: dict[str, Any]


class AppAuthorized(Reply):
    app: dict[str, Any]
    """The app resource."""
    jwt: str
    """``Bastion-Jwt-Assertion`` for this identity and app (valid one minute)."""


JWKS = Endpoint(
    "GET",
    "/.well-known/jwks.json",
    "public",
    "The key set apps verify Bastion-Jwt-Assertion with",
    body=Empty,
    response=Jwks,
)
LIST_APPS = Endpoint(
    "GET",
    "/v1/apps",
    "user",
    "The applications the caller may reach (bsh apps ls)",
    body=Empty,
    response=AppList,
    query=AppsQuery,
)
APP_CERT = Endpoint(
    "POST",
    "/v1/apps/certs",
    "user",
    "A certificate routed to one app, for curl --cert/--key (bsh apps login NAME)",
    body=AppCertRequest,
    response=AppCert,
)
APP_HEARTBEAT = Endpoint(
    "POST",
    "/v1/apps/heartbeat",
    "host",
    "An app agent announces or refreshes an app it serves (app role)",
    body=ResourceDoc,
    response=ResourceDoc,
)
APP_MFA_CHALLENGE = Endpoint(
    "POST",
    "/v1/apps/mfa/challenge",
    "user",
    "Does this app take per-session MFA; if so a WebAuthn challenge (scope app:NAME)",
    body=AppMfaTarget,
    response=AppMfaChallenge,
)
APP_MFA_CERT = Endpoint(
    "POST",
    "/v1/apps/mfa/certs",
    "user",
    "A 1-minute certificate routed to one app, MFA-verified for it (bsh apps login NAME)",
    body=AppMfaCertRequest,
    response=AppCert,
)
APP_SESSION = Endpoint(
    "POST",
    "/v1/apps/sessions/lookup",
    "host",
    "A proxy in its own process looks up an app session (or redeems a launch code)",
    body=AppSessionRequest,
    response=AppSessionFound,
)
APP_SESSION_END = Endpoint(
    "POST",
    "/v1/apps/sessions/end",
    "host",
    "A proxy in its own process ends an app session",
    body=AppSessionRequest,
    response=Empty,
)
APP_AUTHORIZE = Endpoint(
    "POST",
    "/v1/apps/authorize",
    "host",
    "A proxy in its own process: RBAC for an identity and app, and the app's JWT assertion",
    body=AppAuthorizeRequest,
    response=AppAuthorized,
)
