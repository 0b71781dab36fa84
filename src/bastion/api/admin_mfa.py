"""MFA for admin actions: a policy change needs a WebAuthn assertion bound to that one request.

Layer: auth API edge. The decisions are pure (:func:`is_admin_change`, :func:`admin_mfa_required`,
:func:`admin_scope`, the header codec); :class:`AdminMFA` applies them to an aiohttp request.

Protocol (what ``bctl`` does for you)::

    client -> PUT /v1/resources/role/dev  {body}                         (no Bastion-MFA header)
    auth   -> 401 {"error": {"code": "mfa_required", "message": ..., "scope": ...,
                             "challenge": <WebAuthn request options>}}
    client    signs the challenge with a security key
    client -> PUT /v1/resources/role/dev  {the same body}
              Bastion-MFA: base64url(JSON of the WebAuthn assertion)
    auth   -> checks the assertion against scope "admin:PUT /v1/resources/role/dev <sha256 body>"

The challenge is single use and bound to the scope by the MFA service, so an assertion for another
method, path, query or body, or a replayed one, is refused: a stolen admin certificate alone
cannot change policy. Which requests count (:func:`is_admin_change`): every mutating request on
resources (roles, users, connectors, tokens, locks, the auth preference, ...), users, join tokens
and certificate authorities.

Who must (:func:`admin_mfa_required`): per the cluster auth preference's
``require_mfa_for_admin`` (unset: users who have a WebAuthn device; true: every user and bot;
false: nobody). Exempt always: host identities (agents) and the local admin identity of the auth
host (``bctl --data-dir``), whose holder already reads the data dir with the CA key encryption key
(Teleport exempts its local ``tctl`` likewise).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol
from urllib.parse import urlencode

from aiohttp import web

from bastion.api.mfa_header import ADMIN_MFA_HEADER, decode_assertion
from bastion.audit.emitter import Emitter
from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, BadParameter, BastionError, MFARequired
from bastion.mfa.policy import webauthn_enabled
from bastion.mfa.service import usable_webauthn
from bastion.rbac.checker import RoleSet
from bastion.types.access import ADMIN_KINDS
from bastion.types.identity import Identity

__all__ = [
    "AdminMFA",
    "admin_mfa_for",
    "AssertionVerifier",
    "admin_mfa_required",
    "admin_scope",
    "is_admin_change",
]

_MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ADMIN_ROOTS: Final = (
    "/v1/resources",
    "/v1/users",
    "/v1/tokens",
    "/v1/ca",
    "/v1/connectors",
    "/v1/bots",
)


def is_admin_change(method: str, path: str) -> bool:
    """Does this request change cluster policy (and so need MFA under the policy)?

    Args:
        method: the HTTP method.
        path: the decoded request path (no query).
    """
    if method.upper() not in _MUTATING:
        return False
    return any(path == root or path.startswith(root + "/") for root in _ADMIN_ROOTS)


def admin_mfa_required(setting: bool | None, identity: Identity, has_device: bool) -> bool:
    """Must this identity present an assertion for an admin change?

    Args:
        setting: the auth preference's ``require_mfa_for_admin``.
        identity: the caller's certificate identity.
        has_device: the caller has at least one WebAuthn device.
    """
    if identity.kind in ("host", "admin"):
        return False  # agents; the local admin identity of the auth host (module docstring)
    if setting is None:
        return has_device
    return setting


def may_change_anything(role_set: RoleSet) -> bool:
    """Does any role grant create, update or delete on any admin kind?

    A caller who may change nothing is refused by the handler anyway; asking them to touch a
    key first would only add a step before "access denied". Deliberately coarse (no mapping
    of routes to kinds that could drift from the handlers): anyone with any write right is
    asked for MFA on every admin change.
    """
    return any(
        role_set.check_rule(kind, verb).allowed
        for kind in ADMIN_KINDS
        for verb in ("create", "update", "delete")
    )


def admin_scope(method: str, path: str, query: list[tuple[str, str]], body: bytes) -> str:
    """``admin:<METHOD> <path>[?<query sorted by key>] <sha256 hex of the body>``.

    The sort is by key only and stable: values of a repeated key keep their order, because the
    handlers act on the first one.
    """
    target = path + ("?" + urlencode(sorted(query, key=lambda kv: kv[0])) if query else "")
    return f"admin:{method.upper()} {target} {hashlib.sha256(body).hexdigest()}"


class AssertionVerifier(Protocol):
    """The part of ``bastion.mfa.service.MFAService`` used here."""

    async def begin_challenge(self, user: str | None, scope: str) -> dict[str, Any]: ...

    async def verify_challenge(self, user: str | None, scope: str, response: dict[str, Any]) -> Any:
        """Raises: AccessDenied with the reason."""
        ...


class AdminMFA:
    """Applies the admin-MFA rule to authenticated API requests (called by the API middleware)."""

    def __init__(
        self,
        mfa: AssertionVerifier,
        audit: Emitter,
        setting: Callable[[], Awaitable[bool | None]],
        has_device: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._mfa = mfa
        self._audit = audit
        self._setting = setting
        self._has_device = has_device

    async def check(self, request: web.Request, identity: Identity, role_set: RoleSet) -> None:
        """Return when the request may proceed (to the handler, which checks permissions).

        Raises:
            MFARequired: no assertion where one is needed (carries a fresh challenge).
            AccessDenied: the assertion does not verify for this exact request.
            BadParameter: a malformed header.
        """
        if not is_admin_change(request.method, request.path):
            return
        setting = await self._setting()
        if setting is False or identity.kind in ("host", "admin"):
            return  # exempt before the device look-up (admin_mfa_required agrees)
        has_device = await self._has_device(identity.user)
        if not admin_mfa_required(setting, identity, has_device):
            return
        if not may_change_anything(role_set):
            return  # the handler refuses with "access denied" (and audits it): no key touch
        body = await request.read()  # cached by aiohttp: the handler reads it again
        scope = admin_scope(request.method, request.path, list(request.query.items()), body)
        header = request.headers.get(ADMIN_MFA_HEADER)
        remote = request.remote or ""
        if not header:
            if not has_device:
                await self._audit.emit(
                    "mfa.admin",
                    outcome="failure",
                    user=identity.user,
                    target=f"{request.method} {request.path}",
                    remote_addr=remote,
                    scope=scope,
                    reason="require_mfa_for_admin is true and the user has no WebAuthn device",
                )
                raise AccessDenied(
                    "this cluster requires MFA for admin actions and you have no security key: "
                    "register one with bsh mfa add, then retry"
                )
            challenge = await self._mfa.begin_challenge(identity.user, scope)
            raise MFARequired(
                "this admin action needs your security key (MFA for admin actions); bctl asks "
                "for it, other clients must answer the challenge in the Bastion-MFA header",
                challenge=challenge,
                scope=scope,
            )
        try:
            device = await self._mfa.verify_challenge(
                identity.user, scope, decode_assertion(header)
            )
        except BastionError as exc:
            await self._audit.emit(
                "mfa.admin",
                outcome="failure",
                user=identity.user,
                target=f"{request.method} {request.path}",
                remote_addr=remote,
                scope=scope,
                reason=exc.message,
            )
            if isinstance(exc, BadParameter):
                raise
            raise AccessDenied(f"MFA for this admin action failed: {exc.message}") from None
        await self._audit.emit(
            "mfa.admin",
            user=identity.user,
            target=f"{request.method} {request.path}",
            remote_addr=remote,
            scope=scope,
            mfa_device=str(getattr(device, "device_id", "")),
            aaguid=str(getattr(device, "aaguid", "")),
        )


def admin_mfa_for(auth: AuthServer) -> AdminMFA:
    """The admin-MFA check of an auth server (its MFA service, audit log and preference)."""

    async def setting() -> bool | None:
        return (await auth.auth_preference()).spec.require_mfa_for_admin

    async def has_device(user: str) -> bool:
        pref = await auth.auth_preference()
        if not webauthn_enabled(pref.spec.second_factor):
            return False  # no WebAuthn on this cluster: nobody can answer a challenge
        return bool(usable_webauthn(await auth.mfa.list_devices(user)))

    return AdminMFA(auth.mfa, auth.audit, setting, has_device)
