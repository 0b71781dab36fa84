"""Per-session MFA certificates for databases: the SSH flow (:mod:`bastion.auth.session_certs`)
with a database route.

Layer: auth. Two steps, as for SSH:

1. :meth:`DbSessionCerts.challenge` (``POST /v1/db/session/challenge``): RBAC for the database,
   db user and db name, then :func:`~bastion.rbac.db_session_mfa.db_mfa_required` (with the
   cluster's ``require_session_mfa``); when MFA is required, WebAuthn request options bound to
   ``session:db/<database>:<db user>``.
2. :meth:`DbSessionCerts.issue` (``POST /v1/db/session``): verifies the assertion for that scope
   (single use) and signs a user TLS certificate derived from the caller's login certificate:
   a route to the database (db user, db name), ``mfa_verified`` + scope + device, and at most
   one minute of life. The proxy accepts it for that database and db user only.

Outcomes are audited as ``mfa.session`` (``target`` ``db/<name>``, ``login`` the db user);
refusals before any ceremony as ``access.denied`` (``verb: db``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bastion.auth.databases import visible_to
from bastion.auth.server import AuthServer
from bastion.auth.session_certs import ChallengeService, _reason
from bastion.clock import in_zone
from bastion.errors import AccessDenied, BadParameter, BastionError, NotFound
from bastion.locks.matcher import Locked, LockView, decide, identity_targets
from bastion.rbac.checker import RoleSet
from bastion.rbac.conditions import AccessContext, source_ip_of
from bastion.rbac.db_provision import provisioned_roles, with_db_user
from bastion.rbac.db_session_mfa import db_mfa_required, db_session_scope
from bastion.rbac.session_mfa import SESSION_CERT_TTL, SessionMFARefused, is_session_identity
from bastion.types.database import Database
from bastion.types.identity import Identity, RouteToTarget

__all__ = ["DbSessionCert", "DbSessionCerts"]


class DbSessionCert:
    def __init__(self, identity: Identity, cert_pem: str, ca_pem: str) -> None:
        self.identity = identity
        self.cert_pem = cert_pem
        self.ca_pem = ca_pem

    @property
    def expires(self) -> datetime:
        return self.identity.expires


class DbSessionCerts:
    def __init__(self, auth: AuthServer, mfa: ChallengeService) -> None:
        self._auth = auth
        self._mfa = mfa

    async def _resolve(
        self,
        identity: Identity,
        role_set: RoleSet,
        db_service: str,
        db_user: str,
        db_name: str,
        remote_addr: str,
    ) -> tuple[Database, bool]:
        """The database and whether MFA is required, as the proxy will decide.

        Raises:
            AccessDenied: a session certificate asking, or RBAC refusing.
            NotFound: no such database, or one the caller may not see.
            BadParameter: no db user.
        """
        if is_session_identity(identity):
            raise AccessDenied(
                "a per-session MFA certificate cannot be used to get another certificate; use "
                "your login certificate (bsh login)"
            )
        if not db_service or not db_user:
            raise BadParameter("a database and a db user are required (--db-user)")
        try:
            db = await self._auth.databases.get(db_service)
        except NotFound:
            db = None
        if db is None or visible_to(role_set, db) is None:
            raise NotFound(f'database "{db_service}" not found')
        pref = await self._auth.auth_preference()
        context = AccessContext.for_identity(
            identity,
            source_ip=source_ip_of(remote_addr),
            time=in_zone(self._auth.clock.now(), pref.spec.time_zone),
        )
        name = db_name or None
        roles = [await self._auth.roles.get(r) for r in identity.roles]
        if provisioned_roles(roles, identity.traits, db.all_labels()) is not None:
            roles = with_db_user(roles, identity.user)  # create_db_user: the user name
            role_set = RoleSet.from_roles(roles, identity.traits, identity.allowed_resources)
        decision = role_set.check_db_access(
            db.all_labels(), db_user, name, db_service=db_service, context=context
        )
        if not decision.allowed:
            raise SessionMFARefused(
                f'access to database "{db_service}" as db user "{db_user}" denied', decision.reason
            )
        required = db_mfa_required(
            roles, identity.traits, db.all_labels(), db_user, name, db_service=db_service,
            context=context, cluster_requires_mfa=pref.spec.require_session_mfa,
        )  # fmt: skip
        return db, required

    async def challenge(
        self,
        identity: Identity,
        role_set: RoleSet,
        db_service: str,
        db_user: str,
        db_name: str,
        remote_addr: str,
    ) -> dict[str, Any]:
        """``{"mfa_required", "scope", "challenge"}`` (the last two only when required)."""
        try:
            _, required = await self._resolve(
                identity, role_set, db_service, db_user, db_name, remote_addr
            )
        except BastionError as exc:
            await self._refused(identity, db_service, db_user, remote_addr, _reason(exc))
            raise
        answer: dict[str, Any] = {"mfa_required": required}
        if required:
            scope = db_session_scope(db_service, db_user)
            answer["scope"] = scope
            answer["challenge"] = await self._mfa.begin_challenge(identity.user, scope)
        return answer

    async def issue(
        self,
        identity: Identity,
        role_set: RoleSet,
        db_service: str,
        db_user: str,
        db_name: str,
        public_key: str,
        response: dict[str, Any],
        remote_addr: str,
    ) -> DbSessionCert:
        """Verify the assertion and sign the 1-minute database certificate.

        Raises:
            AccessDenied: the ceremony failed, a lock applies, or the resolution refused.
        """
        try:
            db, _ = await self._resolve(
                identity, role_set, db_service, db_user, db_name, remote_addr
            )
        except BastionError as exc:
            await self._refused(identity, db_service, db_user, remote_addr, _reason(exc))
            raise
        scope = db_session_scope(db_service, db_user)
        target = f"db/{db_service}"
        device_id = ""
        try:
            device = await self._mfa.verify_challenge(identity.user, scope, response)
            device_id = device.device_id
            if device.user != identity.user:
                raise AccessDenied("the security key belongs to another user")
            now = self._auth.clock.now()
            session = identity.model_copy(
                update={
                    "expires": min(identity.expires, now + SESSION_CERT_TTL),
                    "route": RouteToTarget(
                        cluster=identity.cluster,
                        db_service=db_service,
                        db_user=db_user,
                        db_name=db_name,
                    ),  # fmt: skip
                    "mfa_verified": True,
                    "mfa_scope": scope,
                    "mfa_device": device.device_id,
                }
            )
            view = LockView(tuple(await self._auth.locks.list()), healthy=True, synced_at=now)
            targets = identity_targets(session, login=db_user, nodes=(db.metadata.name,))
            decision = decide(view, targets, "best_effort", now)
            if not decision.allowed:
                raise Locked(decision.reason)
        except BastionError as exc:
            await self._auth.audit.emit(
                "mfa.session", outcome="failure", user=identity.user, login=db_user,
                target=target, remote_addr=remote_addr, mfa_device=device_id,
                reason=_reason(exc),
            )  # fmt: skip
            raise
        certs = await self._auth.issuer.issue_user(session, public_key, remote_addr)
        await self._auth.audit.emit(
            "mfa.session", user=identity.user, login=db_user, target=target,
            remote_addr=remote_addr, mfa_device=device.device_id, device_name=device.device_name,
            scope=scope, expires=session.expires.isoformat(),
        )  # fmt: skip
        return DbSessionCert(session, certs.tls_cert, certs.tls_host_ca)

    async def _refused(
        self, identity: Identity, db_service: str, db_user: str, remote_addr: str, reason: str
    ) -> None:
        await self._auth.audit.emit(
            "access.denied", outcome="failure", user=identity.user, login=db_user,
            target=f"db/{db_service}", remote_addr=remote_addr, verb="db", reason=reason,
        )  # fmt: skip
