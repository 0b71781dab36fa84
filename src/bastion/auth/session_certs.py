"""Per-session MFA certificates: a fresh WebAuthn ceremony, then 1 minute for one node and login.

Layer: auth (trusted core behind the guarded API; the decisions are the pure
:mod:`bastion.rbac.checker` and :mod:`bastion.rbac.session_mfa`). Two steps:

1. :meth:`SessionCerts.challenge` (``POST /v1/certs/session/challenge``): resolves the node as the
   proxy does, asks RBAC (with the cluster's ``require_session_mfa``) and, when the access needs
   MFA, returns WebAuthn request options whose challenge the MFA service binds to the scope
   ``session:<node>:<login>``. When it does not, it says so and creates no challenge (``bsh ssh``
   then connects with the login certificate).
2. :meth:`SessionCerts.issue` (``POST /v1/certs/session``): verifies the assertion against that
   scope (single use), then signs SSH + X.509 certificates derived from the *caller's certificate
   identity*, narrowed: one login, a route to the node, ``mfa_verified`` + scope, the device used,
   and ``min(1 minute, the login certificate's expiry)``. Nothing is ever derived from a session
   certificate itself (ARCHITECTURE.md 6.2: renewal and derivation never widen).

Every ceremony outcome is audited as ``mfa.session`` (node, login, device; the reason on failure);
a refusal before any ceremony (no such node, a login not in the certificate, RBAC) is an
``access.denied`` event (``verb: ssh``). A node the cluster knows to be offline (a stale
heartbeat, or a reverse tunnel this process knows is down: :meth:`AuthServer.node_online`) is
refused with :class:`~bastion.errors.ConnectionProblem` before any ceremony: a security-key
touch for a node that cannot answer would be wasted.

**Leaf nodes** (trusted clusters, docs/trusted-clusters.md): with ``cluster`` naming a leaf of
this root, the root checks only that the leaf is recorded (a ``remote_cluster``) and that no root
lock covers the user or login; the leaf's node, roles and MFA requirement are the leaf's to
decide, so the answer is always ``mfa_required`` and the certificate is scoped
``session:<leaf>/<node>:<login>`` with a route to that leaf (the leaf's check:
:func:`bastion.auth.trust.leaf_session_mfa`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bastion.auth.issuer import UserCerts
from bastion.auth.key_proof import NO_BINDING, KeyBinding, issue_bound
from bastion.auth.server import AuthServer
from bastion.auth.trust import leaf_session_scope, remote_store
from bastion.clock import in_zone
from bastion.errors import (
    AccessDenied,
    BadParameter,
    BastionError,
    ConnectionProblem,
    NotFound,
)
from bastion.locks.matcher import Locked, LockView, decide, identity_targets
from bastion.protocols.sshroute import find_node
from bastion.rbac.checker import Decision, RoleSet
from bastion.rbac.conditions import AccessContext, source_ip_of
from bastion.rbac.session_mfa import (
    SESSION_CERT_TTL,
    SessionMFARefused,
    is_session_identity,
    session_scope,
)
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.inventory import Node
from bastion.types.meta import NAME_PATTERN

__all__ = [
    "ChallengeService",
    "SessionCerts",
    "SessionTarget",
    "VerifiedDevice",
    "locked",
    "offline_message",
]


class VerifiedDevice(Protocol):
    """What a successful WebAuthn verification tells (``bastion.mfa.service.MFAVerified``)."""

    @property
    def user(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def device_name(self) -> str: ...
    @property
    def aaguid(self) -> str: ...


class ChallengeService(Protocol):
    """The part of ``bastion.mfa.service.MFAService`` used here."""

    async def begin_challenge(self, user: str | None, scope: str) -> dict[str, Any]:
        """WebAuthn request options; the challenge is stored server-side, bound to ``scope``."""
        ...

    async def verify_challenge(
        self, user: str | None, scope: str, response: dict[str, Any]
    ) -> VerifiedDevice:
        """Check one assertion for ``scope`` (single use). Raises: AccessDenied with a reason."""
        ...


@dataclass(frozen=True, slots=True)
class SessionTarget:
    """A resolved target and what RBAC says about it."""

    node: Node
    login: str
    decision: Decision

    @property
    def scope(self) -> str:
        return session_scope(self.node.metadata.name, self.login)


class SessionCerts:
    def __init__(self, auth: AuthServer, mfa: ChallengeService) -> None:
        self._auth = auth
        self._mfa = mfa

    async def resolve(
        self, identity: Identity, role_set: RoleSet, node: str, login: str, remote_addr: str = ""
    ) -> SessionTarget:
        """The node and the RBAC decision for ``login`` on it, as the proxy will decide.

        Raises:
            AccessDenied: a session certificate asking (nothing derives from one), a login not in
                the certificate, or RBAC refusing.
            NotFound: no such node, or one the caller may not see (the same answer).
        """
        if is_session_identity(identity):
            raise AccessDenied(
                "a per-session MFA certificate cannot be used to get another certificate; use "
                "your login certificate (bsh login)"
            )
        if not node or not login:
            raise BadParameter("fields 'node' and 'login' are required")
        found = find_node(await self._auth.nodes.list(), node, self._auth.cluster)
        if found is None or not role_set.check_node_visible(found.name, found.all_labels()).allowed:
            raise NotFound(f"node {node} not found")
        if login not in identity.logins:
            raise AccessDenied(f'login "{login}" is not in your certificate\'s logins')
        pref = await self._auth.auth_preference()
        context = AccessContext.for_identity(
            identity,
            source_ip=source_ip_of(remote_addr),
            time=in_zone(self._auth.clock.now(), pref.spec.time_zone),
        )
        decision = role_set.check_node_access(
            found.name,
            found.all_labels(),
            login,
            cluster_requires_mfa=pref.spec.require_session_mfa,
            context=context,
        )
        if not decision.allowed:  # opaque to the client, like the proxy; the reason to audit
            raise SessionMFARefused(f"access denied to {login}@{node}", decision.reason)
        return SessionTarget(found, login, decision)

    async def challenge(
        self,
        identity: Identity,
        role_set: RoleSet,
        node: str,
        login: str,
        remote_addr: str,
        cluster: str = "",
    ) -> dict[str, Any]:
        """``{"mfa_required": bool, "node": canonical name, "port_forwarding": bool, "scope",
        "challenge"}``. ``port_forwarding`` lets the client refuse ``-L``/``-R`` with the reason
        before connecting (the SSH protocol's refusal carries none).

        A refused resolution (no such node, a login not in the certificate, RBAC) is audited as
        ``access.denied``; only the MFA ceremony's own outcomes are ``mfa.session`` events."""
        if cluster and cluster != self._auth.cluster:
            return await self._leaf_challenge(identity, cluster, node, login, remote_addr)
        try:
            target = await self.resolve(identity, role_set, node, login, remote_addr)
            # A lock on the node (or this login) says why, rather than "offline": a locked
            # node's agent may have dropped its tunnel because of that very lock.
            nodes = (target.node.name, target.node.spec.host_id)
            targets = identity_targets(identity, login=login, nodes=nodes)
            (await self._auth.lock_access(identity, targets)).raise_if_denied()
        except BastionError as exc:
            await self._audit_refusal(identity, node, login, remote_addr, _reason(exc))
            raise
        if self._auth.node_online(target.node) is False:  # before any ceremony: it cannot work
            raise ConnectionProblem(offline_message(target.node.name))
        try:
            answer: dict[str, Any] = {
                "mfa_required": target.decision.mfa_required,
                "node": target.node.name,
                "login": login,
                "port_forwarding": role_set.options().port_forwarding,
            }
            if target.decision.mfa_required:
                answer["scope"] = target.scope
                answer["challenge"] = await self._mfa.begin_challenge(identity.user, target.scope)
        except BastionError as exc:
            await self._audit_failure(identity, node, login, remote_addr, _reason(exc))
            raise
        return answer

    async def issue(
        self,
        identity: Identity,
        role_set: RoleSet,
        node: str,
        login: str,
        public_key: str,
        response: dict[str, Any],
        remote_addr: str,
        cluster: str = "",
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """Verify the assertion for ``session:<node>:<login>`` and sign the 1-minute certificates.

        ``binding``: the device ceremony over a fresh challenge and a TPM-held SSH key it
        certified (:func:`~bastion.auth.key_proof.issue_bound`), for ``require_hardware_key``.

        Raises:
            AccessDenied: the ceremony failed (wrong scope, replayed, unknown device, ...), a lock
                covers the device, or the resolution refused (see :meth:`resolve`).
        """
        if cluster and cluster != self._auth.cluster:
            return await self._leaf_issue(
                identity, cluster, node, login, public_key, response, remote_addr, binding
            )
        device: VerifiedDevice | None = None
        try:
            target = await self.resolve(identity, role_set, node, login, remote_addr)
        except BastionError as exc:
            await self._audit_refusal(identity, node, login, remote_addr, _reason(exc))
            raise
        try:
            device = await self._mfa.verify_challenge(identity.user, target.scope, response)
            if device.user != identity.user:
                raise AccessDenied("the security key belongs to another user")
            session = self.session_identity(identity, target, device.device_id)
            # The proxy and the node check locks again on connect; refusing here keeps a locked
            # user or security key from even getting a certificate.
            lock_reason = await locked(self._auth, session, target.node, login)
            if lock_reason:
                raise Locked(lock_reason)
        except BastionError as exc:
            await self._audit_failure(identity, node, login, remote_addr, _reason(exc), device)
            raise
        certs = await issue_bound(self._auth, session, public_key, remote_addr, binding)
        await self._auth.audit.emit(
            "mfa.session",
            user=identity.user,
            login=login,
            target=target.node.name,
            remote_addr=remote_addr,
            device_id=identity.device_id,
            mfa_device=device.device_id,
            device_name=device.device_name,
            aaguid=device.aaguid,
            scope=target.scope,
            expires=session.expires.isoformat(),
        )
        return certs

    def session_identity(
        self, identity: Identity, target: SessionTarget, mfa_device: str
    ) -> Identity:
        """The caller's identity narrowed to one target for at most a minute (never wider)."""
        now = self._auth.clock.now()
        update: dict[str, Any] = {
            "logins": (target.login,),
            "expires": min(identity.expires, now + SESSION_CERT_TTL),
            "route": RouteToTarget(
                cluster=identity.cluster, node=target.node.name, login=target.login
            ),
            "mfa_verified": True,
            "mfa_scope": target.scope,
            "mfa_device": mfa_device,
        }
        return identity.model_copy(update=update)

    async def _leaf_target(
        self, identity: Identity, leaf: str, node: str, login: str, remote_addr: str
    ) -> str:
        """The scope for ``login@node`` of the leaf ``leaf``: the leaf must be recorded here
        and no root lock may cover the user or login (the node is the leaf's to decide).
        Refusals are audited as ``access.denied``.

        Raises:
            AccessDenied: a session certificate asking, or a root lock. NotFound: no such leaf.
            BadParameter: a malformed name.
        """
        target = f"{leaf}/{node}"
        try:
            if is_session_identity(identity):
                raise AccessDenied(
                    "a per-session MFA certificate cannot be used to get another certificate; "
                    "use your login certificate (bsh login)"
                )
            if not node or not login:
                raise BadParameter("fields 'node' and 'login' are required")
            if not NAME_PATTERN.match(leaf) or not NAME_PATTERN.match(node):
                raise BadParameter(f"invalid cluster or node name {target!r}")
            try:
                await remote_store(self._auth).get(leaf)
            except NotFound:
                raise NotFound(f"cluster {leaf} is not a leaf of this cluster") from None
            targets = identity_targets(identity, login=login, nodes=())
            (await self._auth.lock_access(identity, targets)).raise_if_denied()
            return leaf_session_scope(leaf, node, login)
        except BastionError as exc:
            await self._audit_refusal(identity, target, login, remote_addr, _reason(exc))
            raise

    async def _leaf_challenge(
        self, identity: Identity, leaf: str, node: str, login: str, remote_addr: str
    ) -> dict[str, Any]:
        scope = await self._leaf_target(identity, leaf, node, login, remote_addr)
        try:
            challenge = await self._mfa.begin_challenge(identity.user, scope)
        except BastionError as exc:
            await self._audit_failure(identity, f"{leaf}/{node}", login, remote_addr, _reason(exc))
            raise
        return {
            "mfa_required": True,
            "node": node,
            "login": login,
            "port_forwarding": True,  # the leaf's roles decide, at the leaf
            "scope": scope,
            "challenge": challenge,
        }

    async def _leaf_issue(
        self,
        identity: Identity,
        leaf: str,
        node: str,
        login: str,
        public_key: str,
        response: dict[str, Any],
        remote_addr: str,
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """The 1-minute root certificate for ``login@node`` of ``leaf`` (one login, a route to
        the leaf's node, ``mfa_scope`` ``session:<leaf>/<node>:<login>``)."""
        scope = await self._leaf_target(identity, leaf, node, login, remote_addr)
        target = f"{leaf}/{node}"
        device: VerifiedDevice | None = None
        try:
            device = await self._mfa.verify_challenge(identity.user, scope, response)
            if device.user != identity.user:
                raise AccessDenied("the security key belongs to another user")
            now = self._auth.clock.now()
            session = identity.model_copy(
                update={
                    "logins": (login,),
                    "expires": min(identity.expires, now + SESSION_CERT_TTL),
                    "route": RouteToTarget(cluster=leaf, node=node, login=login),
                    "mfa_verified": True,
                    "mfa_scope": scope,
                    "mfa_device": device.device_id,
                }
            )
            view = LockView(tuple(await self._auth.locks.list()), healthy=True, synced_at=now)
            decision = decide(view, identity_targets(session, login=login), "best_effort", now)
            if not decision.allowed:
                raise Locked(decision.reason)
        except BastionError as exc:
            await self._audit_failure(identity, target, login, remote_addr, _reason(exc), device)
            raise
        certs = await issue_bound(self._auth, session, public_key, remote_addr, binding)
        await self._auth.audit.emit(
            "mfa.session",
            user=identity.user,
            login=login,
            target=target,
            leaf_cluster=leaf,
            remote_addr=remote_addr,
            device_id=identity.device_id,
            mfa_device=device.device_id,
            device_name=device.device_name,
            aaguid=device.aaguid,
            scope=scope,
            expires=session.expires.isoformat(),
        )
        return certs

    async def _audit_refusal(
        self, identity: Identity, node: str, login: str, remote_addr: str, reason: str
    ) -> None:
        await self._auth.audit.emit(
            "access.denied",
            outcome="failure",
            user=identity.user,
            login=login,
            target=node,
            remote_addr=remote_addr,
            verb="ssh",
            reason=reason,
        )

    async def _audit_failure(
        self,
        identity: Identity,
        node: str,
        login: str,
        remote_addr: str,
        reason: str,
        device: VerifiedDevice | None = None,
    ) -> None:
        await self._auth.audit.emit(
            "mfa.session",
            outcome="failure",
            user=identity.user,
            login=login,
            target=node,
            remote_addr=remote_addr,
            mfa_device=device.device_id if device else "",
            reason=reason,
        )


def offline_message(node: str) -> str:
    """What ``bsh ssh`` says for a node the cluster knows to be offline."""
    return (
        f"node {node} is offline: its agent is not connected (no fresh heartbeat or reverse "
        "tunnel); check that its agent runs and can reach the proxy (bsh ls shows STATUS)"
    )


def _reason(exc: BastionError) -> str:
    """The detailed reason for audit (a lock's or RBAC's), not the client's message."""
    reason = getattr(exc, "reason", "")
    return reason if isinstance(reason, str) and reason else exc.message


async def locked(auth: AuthServer, session: Identity, node: Node, login: str) -> str:
    """The lock message when a lock covers this session identity (its MFA device included)."""
    now = auth.clock.now()
    view = LockView(tuple(await auth.locks.list()), healthy=True, synced_at=now)
    targets = identity_targets(session, login=login, nodes=(node.name, node.spec.host_id))
    decision = decide(view, targets, "best_effort", now)
    return "" if decision.allowed else decision.reason
