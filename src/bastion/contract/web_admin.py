"""The web UI's JSON for the admin pages and the recording player (audience ``web``: the
browser's cookie session, admitted by the gate like every page; docs/web-ui.md).

* ``POST /web/admin/mfa/begin``: before an admin form is submitted, the WebAuthn challenge
  bound to exactly that change (its action path and fields), when the cluster requires MFA for
  admin actions (``X-CSRF-Token`` header required).
* ``GET /web/recordings/{session_id}/cast``: the recording's asciicast bytes for the player,
  audited as ``recording.view`` (as ``bsh play``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, OpenReply

__all__ = ["WEB_ADMIN_MFA_BEGIN", "WEB_RECORDING_CAST", "AdminMFABegin", "AdminMFAChallenge"]


class AdminMFABegin(Body):
    action: str = Field(pattern=r"^/web/admin/[A-Za-z0-9_.~%/@+-]{1,400}$")
    """The form's action path, as the browser will post it (percent-encoded)."""
    fields: dict[str, str] = Field(default_factory=dict, max_length=50)
    """The form's fields (the CSRF token and the assertion are ignored)."""


class AdminMFAChallenge(OpenReply):
    required: bool
    """False: the cluster does not ask this user for MFA on admin changes."""
    options: dict[str, Any] | None = None
    """WebAuthn request options (base64url fields) for ``navigator.credentials.get``."""


class RecordingMeta(OpenReply):
    session_id: str
    sha256: str = ""


WEB_ADMIN_MFA_BEGIN = Endpoint(
    "POST",
    "/web/admin/mfa/begin",
    "web",
    "The security-key challenge for one admin change made in the browser",
    body=AdminMFABegin,
    response=AdminMFAChallenge,
)
WEB_RECORDING_CAST = Endpoint(
    "GET",
    "/web/recordings/{session_id}/cast",
    "web",
    "One recording's asciicast for the browser's player (audited as recording.view)",
    body=Empty,
    response=RecordingMeta,
    stream="application/x-asciicast",
)
