"""Application access in auth: registered apps, RBAC over them, app certificates, the JWT key.

Layer: auth (trusted core; the API handlers in :mod:`bastion.api.apps`, the login pages'
launch in :mod:`bastion.web.apps` and the proxy's app route pass verified identities).

* Apps are ``app`` resources under ``apps/``: heartbeated by an app agent
  (:meth:`AppAccess.heartbeat`, bound to its host id, expiring) or created by an administrator
  (``bctl create``; the proxy then reaches the app's URI itself).
* :meth:`AppAccess.authorize`: RBAC ``app_labels`` (allow/deny, trait templates, ``where``
  conditions) for one identity and app. Unknown and forbidden apps give the caller the same
  answer, so nobody learns which apps exist.
* Per-session MFA (``require_session_mfa`` on every role that allows the app, or the
  cluster's): only an identity MFA-verified for this app (``mfa_scope`` ``app:NAME``) passes:
  the browser's step-up on the launch page (:mod:`bastion.web.apps`) gives the app session
  such an identity; ``bsh apps login`` gets an MFA-scoped certificate (below).
* :meth:`AppAccess.mfa_challenge` / :meth:`AppAccess.mfa_cert`: the per-session MFA
  certificate flow of SSH and databases (:mod:`bastion.auth.session_certs`,
  :mod:`bastion.auth.db_session`) for ``bsh apps login NAME``: whether the app takes MFA, a
  WebAuthn challenge bound to ``app:NAME`` (and whether a TOTP code may answer instead), then
  a certificate routed to the app with ``mfa_verified`` + ``mfa_scope`` ``app:NAME`` + the
  device, living at most :data:`~bastion.rbac.session_mfa.SESSION_CERT_TTL`. Never derived
  from an MFA-scoped identity; audited as ``mfa.session`` (``target`` ``app/NAME``).
* :meth:`AppAccess.app_cert`: ``bsh apps login NAME``: the caller's identity narrowed to a
  route to one app (``route.app``), never longer-lived than the caller's certificate, signed
  by the user TLS CA (``curl --cert/--key`` against ``https://NAME.<proxy>``).
* :meth:`AppAccess.signer` / :meth:`AppAccess.jwks`: the ``jwt`` CA's signing key (unsealed
  once, re-read when the CA's active key changes) and its public key set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bastion.auth.server import AuthServer
from bastion.auth.session_certs import _reason
from bastion.ca import authority as ca_authority
from bastion.ca.jwt import JwtKey, app_claims, jwks
from bastion.errors import AccessDenied, BadParameter, BastionError, NotFound
from bastion.locks.matcher import Locked, LockView, identity_targets
from bastion.locks.matcher import decide as lock_decision
from bastion.rbac.checker import RoleSet
from bastion.rbac.session_mfa import SESSION_CERT_TTL
from bastion.services.app_sessions import AppSessions
from bastion.services.cache import StoreRoleSource
from bastion.services.store import ResourceStore
from bastion.types.apps import App
from bastion.types.identity import Identity, RouteToTarget

__all__ = [
    "APP_HEARTBEAT_MAX_TTL",
    "APP_MFA_SCOPE_PREFIX",
    "AppAccess",
    "AppCertificate",
    "AppMfaChallenge",
    "app_not_found",
    "app_mfa_scope",
    "mfa_verified_for",
]

APP_HEARTBEAT_MAX_TTL = timedelta(minutes=10)
"""A heartbeat record lives at most this long without a refresh."""
APP_MFA_SCOPE_PREFIX = "app:"
_KEY_RECHECK = 30.0
"""Seconds between checks that the cached JWT signing key is still the CA's active key."""


def app_mfa_scope(name: str) -> str:
    """The ``mfa_scope`` of an identity MFA-verified for app ``name``."""
    return APP_MFA_SCOPE_PREFIX + name


def mfa_verified_for(identity: Identity, name: str) -> bool:
    """Did ``identity`` pass a WebAuthn ceremony for app ``name`` (the browser step-up)?"""
    return identity.mfa_verified and identity.mfa_scope == app_mfa_scope(name)


def app_not_found(name: str) -> AccessDenied:
    """The one answer for an unknown app and a forbidden one."""
    return AccessDenied(f'app "{name[:64]}" not found or access denied')


@dataclass(frozen=True, slots=True)
class AppCertificate:
    cert_pem: str
    ca_pem: str
    """The host TLS CA bundle (to verify the proxy)."""
    expires: datetime


@dataclass(frozen=True, slots=True)
class AppMfaChallenge:
    """Whether ``bsh apps login NAME`` needs per-session MFA, and how to answer."""

    mfa_required: bool
    scope: str = ""
    challenge: dict[str, Any] | None = None
    """WebAuthn request options (None: the user has no usable security key)."""
    totp: bool = False
    """A TOTP code may answer instead."""


class AppAccess:
    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth
        self.apps: ResourceStore[App] = auth.apps
        self.sessions = AppSessions(auth.deps.backend, auth.clock)
        self.roles = StoreRoleSource(auth.watched_roles)
        self._key: JwtKey | None = None
        self._key_checked = 0.0

    async def register(self, app: App) -> App:
        """Add or replace an app (the test rig's registration; agents heartbeat)."""
        return await self.apps.upsert(app)

    async def heartbeat(self, app: App, agent: Identity, remote_addr: str) -> App:
        """Upsert an app the agent serves, bound to the agent's host id; it expires unless
        refreshed (a heartbeat, like a node's: not an audited change).

        Raises:
            AccessDenied: not an app agent, the name is held by another live agent, or an
                administrator created it (``bctl create``).
        """
        if agent.kind != "host" or "app" not in agent.roles or not agent.host_id:
            raise AccessDenied("access denied: app heartbeats come from app agents")
        try:
            existing: App | None = await self.apps.get(app.metadata.name)
        except NotFound:
            existing = None
        if existing is not None and existing.spec.host_id not in ("", agent.host_id):
            await self._auth.audit.emit(
                "app.rejected",
                outcome="failure",
                user=agent.user,
                target=f"app/{app.metadata.name}",
                remote_addr=remote_addr,
                reason=f"name already held by host {existing.spec.host_id}",
            )
            raise AccessDenied(f"app name {app.metadata.name!r} is already served by another agent")
        if existing is not None and not existing.metadata.expires:
            raise AccessDenied(
                f"app {app.metadata.name!r} was created by an administrator (bctl create): "
                "delete it or rename the agent's entry"
            )
        latest = self._auth.clock.now() + APP_HEARTBEAT_MAX_TTL
        record = app.model_copy(deep=True)
        record.spec.host_id = agent.host_id
        expires = record.metadata.expires
        record.metadata.expires = min(expires, latest) if expires else latest
        record.metadata.revision = ""
        return await self.apps.upsert(record)

    async def get_app(self, name: str) -> App:
        """Raises: NotFound."""
        return await self.apps.get(name)

    async def role_set(self, identity: Identity) -> RoleSet:
        return RoleSet.from_roles(
            await self.roles.get_roles(identity.roles), identity.traits, identity.allowed_resources
        )

    async def decide(self, identity: Identity, name: str) -> tuple[App, bool]:
        """The app and whether it takes per-session MFA, when ``identity``'s roles allow it
        (the MFA is not checked here: :meth:`authorize` does).

        Raises:
            AccessDenied: unknown app or RBAC refuses (one message for both).
        """
        try:
            app = await self.get_app(name)
        except NotFound:
            raise app_not_found(name) from None
        pref = await self._auth.auth_preference()
        decision = (await self.role_set(identity)).check_app_access(
            app.all_labels(),
            app_name=app.metadata.name,
            cluster_requires_mfa=pref.spec.require_session_mfa,
        )
        if not decision.allowed:
            raise app_not_found(name)
        return app, decision.mfa_required

    async def authorize(self, identity: Identity, name: str) -> App:
        """The app, when ``identity`` may reach it.

        Raises:
            AccessDenied: unknown app or RBAC refuses (one message for both); per-session MFA
                required and the identity is not MFA-verified for this app.
        """
        app, mfa_required = await self.decide(identity, name)
        if mfa_required and not mfa_verified_for(identity, app.metadata.name):
            raise AccessDenied(
                f'app "{app.metadata.name}" requires per-session MFA: open it in a browser '
                f"and confirm with your security key, or run bsh apps login {app.metadata.name}"
            )
        return app

    async def mfa_begin(self, identity: Identity, name: str) -> dict[str, Any]:
        """WebAuthn options for the step-up to app ``name`` (challenge scope ``app:NAME``).

        Raises:
            AccessDenied: the app is unknown or forbidden, or the cluster has no WebAuthn.
        """
        app, _ = await self.decide(identity, name)
        return await self._auth.mfa.begin_challenge(identity.user, app_mfa_scope(app.metadata.name))

    async def mfa_finish(
        self, identity: Identity, name: str, credential: dict[str, Any]
    ) -> Identity:
        """Verify the step-up assertion; returns ``identity`` MFA-verified for this app (what
        the app session then carries).

        Raises:
            AccessDenied: a bad, used, expired or other-scope assertion; app refused.
        """
        app, _ = await self.decide(identity, name)
        scope = app_mfa_scope(app.metadata.name)
        verified = await self._auth.mfa.verify_challenge(identity.user, scope, credential)
        return identity.model_copy(
            update={"mfa_verified": True, "mfa_scope": scope, "mfa_device": verified.device_id}
        )

    async def list_allowed(
        self, identity: Identity, labels: dict[str, str] | None = None
    ) -> list[App]:
        """The apps ``identity`` may reach (matching ``labels`` when given), by name."""
        roles = await self.role_set(identity)
        out = []
        for app in await self.apps.list():
            if labels and any(app.metadata.labels.get(k) != v for k, v in labels.items()):
                continue
            if roles.check_app_access(app.all_labels(), app_name=app.metadata.name).allowed:
                out.append(app)
        return sorted(out, key=lambda a: a.metadata.name)

    async def app_cert(
        self,
        caller: Identity,
        public_key: str,
        name: str,
        ttl: timedelta,
        remote_addr: str,
        presented_key_sha256: str = "",
    ) -> AppCertificate:
        """A user TLS certificate routed to app ``name`` (``bsh apps login``).
        ``presented_key_sha256``: the key of the caller's certificate, attested for
        ``require_hardware_key`` when that certificate says so (a TPM-held key asking for
        itself: :meth:`~bastion.auth.issuer.Issuer.presented_key_attestation`).

        Raises:
            AccessDenied: not a user or bot, or the app is unknown or forbidden.
            BadParameter: an invalid public key.
        """
        if caller.kind not in ("user", "admin", "bot"):
            raise AccessDenied("only users and bots get app certificates")
        if caller.mfa_scope:
            raise AccessDenied(
                "an MFA-scoped certificate cannot be used to get another certificate; use "
                "your login certificate (bsh login)"
            )
        _, mfa_required = await self.decide(caller, name)
        if mfa_required and not mfa_verified_for(caller, name):
            raise AccessDenied(
                f'app "{name}" requires per-session MFA: bsh apps login {name} asks for your '
                "security key or TOTP code (an MFA-scoped certificate)"
            )
        now = self._auth.clock.now()
        expires = min(caller.expires, now + max(ttl, timedelta(minutes=1)))
        route = RouteToTarget(cluster=caller.cluster, app=name)
        identity = caller.model_copy(update={"route": route, "expires": expires})
        attested = self._auth.issuer.presented_key_attestation(caller, presented_key_sha256)
        certs = await self._auth.issuer.issue_user(
            identity, public_key, remote_addr, key_attestation=attested
        )
        return AppCertificate(certs.tls_cert, certs.tls_host_ca, expires)

    async def _mfa_target(self, caller: Identity, name: str) -> tuple[App, bool]:
        """The app and whether it takes MFA, for the caller's login certificate.

        Raises:
            AccessDenied: not a user, an MFA-scoped identity asking, or the app refused.
        """
        if caller.kind not in ("user", "admin"):
            raise AccessDenied("only users get MFA-scoped app certificates")
        if caller.mfa_verified or caller.mfa_scope:
            raise AccessDenied(
                "an MFA-scoped certificate cannot be used to get another certificate; use "
                "your login certificate (bsh login)"
            )
        return await self.decide(caller, name)

    async def mfa_challenge(self, caller: Identity, name: str, remote_addr: str) -> AppMfaChallenge:
        """Does app ``name`` take per-session MFA for ``caller``; if so a WebAuthn challenge
        (scope ``app:NAME``) when the user has a security key, and whether TOTP may answer.

        Raises:
            AccessDenied: the app is unknown or forbidden (one message), an MFA-scoped caller,
                or MFA is required and the user has no device to answer with.
        """
        try:
            app, required = await self._mfa_target(caller, name)
            if not required:
                return AppMfaChallenge(False)
            scope = app_mfa_scope(app.metadata.name)
            challenge: dict[str, Any] | None
            try:
                challenge = await self._auth.mfa.begin_challenge(caller.user, scope)
            except (NotFound, BadParameter):  # no security key, or no WebAuthn here
                challenge = None
            totp = await self._auth.mfa.totp_device(caller.user) is not None
            if challenge is None and not totp:
                raise AccessDenied(
                    f'app "{app.metadata.name}" requires per-session MFA and you have no '
                    "MFA device: register one with bsh mfa add"
                )
        except BastionError as exc:
            await self._refused(caller, name, remote_addr, _reason(exc))
            raise
        return AppMfaChallenge(True, scope, challenge, totp)

    async def mfa_cert(
        self,
        caller: Identity,
        public_key: str,
        name: str,
        remote_addr: str,
        *,
        webauthn: dict[str, Any] | None = None,
        otp: str = "",
    ) -> AppCertificate:
        """Verify the answer (a WebAuthn assertion for ``app:NAME``, or a TOTP code) and sign
        a certificate routed to app ``name``, MFA-verified for it, living at most
        :data:`SESSION_CERT_TTL` (and never past the caller's certificate).

        Raises:
            AccessDenied: the app refused, a bad or used answer, or a lock applies.
            BadParameter: no answer, or an invalid public key.
        """
        try:
            app, _ = await self._mfa_target(caller, name)
        except BastionError as exc:
            await self._refused(caller, name, remote_addr, _reason(exc))
            raise
        name = app.metadata.name
        scope = app_mfa_scope(name)
        target = f"app/{name}"
        device_id = device_name = ""
        try:
            if webauthn:
                verified = await self._auth.mfa.verify_challenge(caller.user, scope, webauthn)
                if verified.user != caller.user:
                    raise AccessDenied("the security key belongs to another user")
                device_id, device_name = verified.device_id, verified.device_name
            elif otp:
                totp = await self._auth.mfa.totp_device(caller.user)
                if totp is None or not await self._auth.mfa.totp.check(caller.user, otp):
                    raise AccessDenied("the TOTP code is wrong or was already used")
                device_id, device_name = totp.id, totp.name
            else:
                raise BadParameter("answer the MFA challenge: a WebAuthn assertion or a TOTP code")
            now = self._auth.clock.now()
            session = caller.model_copy(
                update={
                    "expires": min(caller.expires, now + SESSION_CERT_TTL),
                    "route": RouteToTarget(cluster=caller.cluster, app=name),
                    "mfa_verified": True,
                    "mfa_scope": scope,
                    "mfa_device": device_id,
                }
            )
            view = LockView(tuple(await self._auth.locks.list()), healthy=True, synced_at=now)
            targets = identity_targets(session, nodes=(name,))
            lock = lock_decision(view, targets, "best_effort", now)
            if not lock.allowed:
                raise Locked(lock.reason)
        except BastionError as exc:
            await self._auth.audit.emit(
                "mfa.session", outcome="failure", user=caller.user, target=target,
                remote_addr=remote_addr, mfa_device=device_id, reason=_reason(exc),
            )  # fmt: skip
            raise
        certs = await self._auth.issuer.issue_user(session, public_key, remote_addr)
        await self._auth.audit.emit(
            "mfa.session", user=caller.user, target=target, remote_addr=remote_addr,
            mfa_device=device_id, device_name=device_name, scope=scope,
            expires=session.expires.isoformat(),
        )  # fmt: skip
        return AppCertificate(certs.tls_cert, certs.tls_host_ca, session.expires)

    async def _refused(self, caller: Identity, name: str, remote_addr: str, reason: str) -> None:
        await self._auth.audit.emit(
            "access.denied", outcome="failure", user=caller.user, target=f"app/{name[:64]}",
            remote_addr=remote_addr, verb="app", reason=reason,
        )  # fmt: skip

    async def signer(self) -> JwtKey:
        """The ``jwt`` CA's signing key (cached; re-read when the active key changes)."""
        tick = time.monotonic()
        if self._key is not None and tick - self._key_checked < _KEY_RECHECK:
            return self._key
        ca = await self._auth.issuer.ca("jwt")
        active = ca.spec.active_keys[0].id if ca.spec.active_keys else ""
        if self._key is None or self._key.kid != active:
            self._key = JwtKey(ca_authority.signing_key(ca, self._auth.deps.kek))
        self._key_checked = tick
        return self._key

    async def assertion(self, identity: Identity, app: App) -> str:
        """``Bastion-Jwt-Assertion`` for ``identity`` at ``app`` (one minute)."""
        key = await self.signer()
        return key.sign(app_claims(identity, app.spec.uri, self._auth.clock.now()))

    async def jwks(self) -> dict[str, Any]:
        """The public key set apps verify assertions with."""
        return jwks(await self._auth.issuer.ca("jwt"))
