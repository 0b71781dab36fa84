"""SSO logins for bsh (public, rate-limited; the request's secret is the credential).

``login_path`` is what the browser opens on the proxy, ``code`` the short code a headless
confirmation page shows. The result is the certificates (once) or ``{"status": ...}`` after
waiting up to ``wait`` seconds (long-poll).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from bastion.contract.base import Body, Endpoint, Reply
from bastion.contract.core import DeviceBound, Duration, Text

__all__ = ["SSO_REQUEST", "SSO_RESULT", "SSOResult"]


class SSORequest(DeviceBound):
    """``device``: the proof over the ping's challenge, verified when the IdP answers (sign in
    within the challenge's 2 minutes for the certificates to carry the device)."""

    connector: str = Field(min_length=1, max_length=256)
    public_key: Text
    ttl: Duration = timedelta(hours=12)
    secret: Text
    client_redirect: str = ""


class SSOPending(Reply):
    request_id: str
    login_path: str
    code: str


class ResultQuery(Body):
    secret: Text
    code: str = ""
    wait: float = Field(default=0, ge=0, le=120)


class SSOResult(Reply):
    """The certificates once the login is done; until then only ``status``."""

    status: str = ""
    user: str = ""
    ssh_cert: str = ""
    tls_cert: str = ""
    ssh_host_ca: list[str] = []
    tls_host_ca: str = ""
    tls_user_ca: str = ""
    expires: str = ""
    roles: list[str] = []
    logins: list[str] = []
    cluster: str = ""
    mfa_device: str = ""
    device_challenge: str = ""
    device_error: str = ""
    """The request's ``device`` proof was refused (the certificates carry no device): why."""


SSO_REQUEST = Endpoint(
    "POST",
    "/v1/sso/requests",
    "public",
    "Start an SSO login for a public key",
    body=SSORequest,
    response=SSOPending,
    status=201,
)
SSO_RESULT = Endpoint(
    "POST",
    "/v1/sso/requests/{id}/result",
    "public",
    "The SSO login's certificates (once), or its status after waiting up to `wait` seconds",
    body=ResultQuery,
    response=SSOResult,
)
