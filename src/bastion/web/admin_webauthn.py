"""MFA for admin actions in the browser: a WebAuthn assertion bound to the one form submitted.

Layer: web. The rule is the API's (:mod:`bastion.api.admin_mfa`): the cluster auth preference's
``require_mfa_for_admin`` (unset: users who have a WebAuthn device; true: everyone; false:
nobody). The browser flow (``static/admin.js``):

1. Before submitting an admin form, the page POSTs ``/web/admin/mfa/begin`` with the form's
   action path and fields (``X-CSRF-Token``); the server answers the WebAuthn request options
   for the scope :func:`web_admin_scope` of exactly that change (or ``required: false``).
2. The browser signs it (``navigator.credentials.get``) and submits the form with the
   assertion in the hidden field ``mfa_assertion``.
3. The form's handler recomputes the scope from what was actually posted and verifies the
   assertion (:meth:`WebAdminMFA.check`): single use, bound to user and scope, so the assertion
   cannot be replayed or used for another change. Success and failure are audited
   (``mfa.admin``) like the API's.

A challenge that expired before the key was touched is refused with a message to try again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, BadParameter, BastionError
from bastion.mfa.policy import webauthn_enabled
from bastion.mfa.service import usable_webauthn
from bastion.types.identity import Identity
from bastion.web.security import CSRF_FIELD

__all__ = ["ASSERTION_FIELD", "WebAdminMFA", "canonical_fields", "web_admin_scope"]

ASSERTION_FIELD = "mfa_assertion"
_NOT_HASHED = frozenset({CSRF_FIELD, ASSERTION_FIELD})


def canonical_fields(fields: Mapping[str, str]) -> bytes:
    """The form's fields as the scope hashes them: sorted, line ends normalised (browsers send
    textareas with CRLF), the CSRF token and the assertion itself left out."""
    clean = {k: v.replace("\r\n", "\n") for k, v in fields.items() if k not in _NOT_HASHED}
    return json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()


def web_admin_scope(action: str, fields: Mapping[str, str]) -> str:
    """``admin:POST <page path> <sha256 of the canonical fields>`` (never an API scope: the
    paths differ)."""
    return f"admin:POST {action} {hashlib.sha256(canonical_fields(fields)).hexdigest()}"


class WebAdminMFA:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    async def policy(self, identity: Identity) -> tuple[bool, bool]:
        """(required, has_device) for this identity's admin changes."""
        pref = await self.auth.auth_preference()
        setting = pref.spec.require_mfa_for_admin
        if setting is False or identity.kind in ("host", "admin"):
            return False, False
        has_device = webauthn_enabled(pref.spec.second_factor) and bool(
            usable_webauthn(await self.auth.mfa.list_devices(identity.user))
        )
        return (has_device if setting is None else setting), has_device

    async def begin(
        self, identity: Identity, action: str, fields: Mapping[str, str]
    ) -> dict[str, Any]:
        """``{"required": false}`` or ``{"required": true, "options": <WebAuthn options>}``.

        Raises:
            AccessDenied: MFA is required and the user has no security key.
        """
        required, has_device = await self.policy(identity)
        if not required:
            return {"required": False}
        if not has_device:
            raise AccessDenied(_NO_KEY)
        options = await self.auth.mfa.begin_challenge(
            identity.user, web_admin_scope(action, fields)
        )
        return {"required": True, "options": options}

    async def check(
        self, identity: Identity, action: str, fields: Mapping[str, str], remote: str
    ) -> None:
        """Return when this posted change may proceed (after the RBAC check of the handler).

        Raises:
            AccessDenied: an assertion is required and missing, or does not verify.
        """
        required, has_device = await self.policy(identity)
        if not required:
            return
        scope = web_admin_scope(action, fields)
        target = f"POST {action}"
        if not has_device:
            await self._audit(identity, target, remote, scope, reason=_NO_KEY)
            raise AccessDenied(_NO_KEY)
        raw = fields.get(ASSERTION_FIELD, "")
        if not raw:
            raise AccessDenied(
                "this change needs your security key (MFA for admin actions) and none was "
                "presented; nothing was changed: submit the form again and touch your key"
            )
        try:
            credential = json.loads(raw)
            if not isinstance(credential, dict):
                raise BadParameter("the security key's answer is not a credential")
            device = await self.auth.mfa.verify_challenge(identity.user, scope, credential)
        except (ValueError, BastionError) as exc:
            reason = exc.message if isinstance(exc, BastionError) else "malformed assertion"
            await self._audit(identity, target, remote, scope, reason=reason)
            raise AccessDenied(
                f"MFA for this change failed ({reason}); nothing was changed. The key must be "
                "touched for this very change, before its challenge expires: try again"
            ) from None
        await self.auth.audit.emit(
            "mfa.admin",
            user=identity.user,
            target=target,
            remote_addr=remote,
            scope=scope,
            mfa_device=str(getattr(device, "device_id", "")),
            aaguid=str(getattr(device, "aaguid", "")),
        )

    async def _audit(
        self, identity: Identity, target: str, remote: str, scope: str, reason: str
    ) -> None:
        await self.auth.audit.emit(
            "mfa.admin",
            outcome="failure",
            user=identity.user,
            target=target,
            remote_addr=remote,
            scope=scope,
            reason=reason,
        )


_NO_KEY = (
    "this cluster requires MFA for admin actions and you have no security key: register one "
    "on the Security keys page (/web/mfa), then retry"
)
