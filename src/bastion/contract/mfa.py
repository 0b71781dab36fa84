"""MFA: WebAuthn and passwordless login (public), the caller's own devices, challenges,
and per-session MFA certificates.

``proof`` is ``{"webauthn": assertion}`` for scope ``mfa:add`` / ``mfa:remove:<name>``, or
``{"otp": code}``; it is required once the user has a device.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, OpenReply, Reply
from bastion.contract.core import DeviceBound, Duration, Text, UserCerts

__all__ = [
    "ADD_DEVICE_BEGIN",
    "ADD_DEVICE_FINISH",
    "DEVICE_CHALLENGE",
    "INVITE_WEBAUTHN",
    "LIST_DEVICES",
    "LOGIN_BEGIN",
    "PASSWORDLESS",
    "PASSWORDLESS_BEGIN",
    "REMOVE_DEVICE",
    "SESSION_CERTS",
    "SESSION_CHALLENGE",
]

WebAuthnJSON = dict[str, Any]
"""WebAuthn options or a credential, as the W3C JSON serialisation."""
Short = Annotated[str, Field(min_length=1, max_length=256)]


class LoginBegin(Body):
    user: Short
    password: Text


class LoginChallenge(Reply):
    totp: bool
    webauthn: WebAuthnJSON | None


class WebAuthnOptions(Reply):
    webauthn: WebAuthnJSON


class Passwordless(DeviceBound):
    webauthn: WebAuthnJSON
    public_key: Text
    ttl: Duration = timedelta(hours=12)


class InviteWebAuthn(Body):
    token: Text


LOGIN_BEGIN = Endpoint(
    "POST",
    "/v1/login/begin",
    "public",
    "Check the password; returns which second factor to use and the WebAuthn challenge",
    body=LoginBegin,
    response=LoginChallenge,
)
PASSWORDLESS_BEGIN = Endpoint(
    "POST",
    "/v1/login/passwordless/begin",
    "public",
    "A passkey challenge (no user name: the authenticator picks the account)",
    body=Empty,
    response=WebAuthnOptions,
)
PASSWORDLESS = Endpoint(
    "POST",
    "/v1/login/passwordless",
    "public",
    "Log in with a passkey assertion",
    body=Passwordless,
    response=UserCerts,
)
INVITE_WEBAUTHN = Endpoint(
    "POST",
    "/v1/invites/webauthn",
    "public",
    "WebAuthn registration options for the security key of an invite",
    body=InviteWebAuthn,
    response=WebAuthnOptions,
)


# ---- the caller's devices ------------------------------------------------------------------------


class Device(OpenReply):
    id: str
    name: str
    type: str
    added: str
    last_used: str | None = None


class Devices(Reply):
    devices: list[Device]


class AddBegin(Body):
    type: Literal["webauthn", "totp"] = "webauthn"
    passwordless: bool = False


class TOTPEnrolment(Reply):
    enrolment: str
    secret: str
    uri: str


class AddOptions(Reply):
    webauthn: WebAuthnJSON | None = None
    totp: TOTPEnrolment | None = None


class Proof(Body):
    webauthn: WebAuthnJSON | None = None
    otp: str = ""


class AddFinish(Body):
    type: Literal["webauthn", "totp"] = "webauthn"
    name: Short
    webauthn: WebAuthnJSON | None = None
    enrolment: str = ""
    code: str = ""
    proof: Proof = Proof()


class Remove(Body):
    proof: Proof = Proof()


class Removed(Reply):
    removed: str


class ChallengeScope(Body):
    scope: Short
    """``mfa:add`` or ``mfa:remove:<device name>``."""


LIST_DEVICES = Endpoint(
    "GET", "/v1/mfa/devices", "user", "Your MFA devices", body=Empty, response=Devices
)
ADD_DEVICE_BEGIN = Endpoint(
    "POST",
    "/v1/mfa/devices/begin",
    "user",
    "Start adding a device: WebAuthn registration options or a TOTP secret",
    body=AddBegin,
    response=AddOptions,
)
ADD_DEVICE_FINISH = Endpoint(
    "POST",
    "/v1/mfa/devices/finish",
    "user",
    "Finish adding a device (with a proof from an existing device, once you have one)",
    body=AddFinish,
    response=Device,
    status=201,
)
REMOVE_DEVICE = Endpoint(
    "POST",
    "/v1/mfa/devices/{name}/remove",
    "user",
    "Remove a device (with a proof from an existing device)",
    body=Remove,
    response=Removed,
)
DEVICE_CHALLENGE = Endpoint(
    "POST",
    "/v1/mfa/challenge",
    "user",
    "A WebAuthn challenge for a device change (scope mfa:add or mfa:remove:NAME)",
    body=ChallengeScope,
    response=WebAuthnOptions,
)


# ---- per-session MFA certificates ----------------------------------------------------------------


class SessionTarget(Body):
    node: Short
    login: Short
    cluster: str = Field(default="", max_length=256)
    """A leaf cluster of this root (trusted clusters); empty: this cluster's own node."""


class SessionChallenge(Reply):
    mfa_required: bool
    node: str
    """The node's canonical name."""
    login: str
    port_forwarding: bool = True
    scope: str = ""
    challenge: WebAuthnJSON | None = None


class SessionIssue(DeviceBound):
    node: Short
    login: Short
    public_key: Text
    mfa_response: WebAuthnJSON
    cluster: str = Field(default="", max_length=256)
    """A leaf cluster of this root (trusted clusters); empty: this cluster's own node."""


class SessionCerts(Reply):
    user: str
    node: str
    login: str
    ssh_cert: str
    tls_cert: str
    expires: str
    scope: str


SESSION_CHALLENGE = Endpoint(
    "POST",
    "/v1/certs/session/challenge",
    "user",
    "Whether a session to this node and login needs MFA; the challenge if it does",
    body=SessionTarget,
    response=SessionChallenge,
)
SESSION_CERTS = Endpoint(
    "POST",
    "/v1/certs/session",
    "user",
    "1-minute certificates for one node and login, for an MFA assertion",
    body=SessionIssue,
    response=SessionCerts,
)
