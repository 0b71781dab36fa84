"""AuthServer: the control plane's trusted core (no RBAC inside; see guarded.py for that).

It owns the stores, creates the certificate authorities and built-in resources at first start,
and implements resource changes, join tokens and CA operations, auditing each one. User
credentials and login live in :mod:`.users`; certificate signing in :mod:`.issuer`.

Every change of stored state that has an audit event goes through :meth:`AuthServer.audited`
(and :meth:`AuthServer.audited_modify` for read-modify-write): the store's ops and the event are
one backend transaction, so a change is never stored without its event, nor an event without its
change. Where a step cannot share the transaction (MFA data owned by :mod:`bastion.mfa`), an
intent event is written first and a completion event after (:meth:`AuthServer.external_step`);
docs/audit.md lists those paths. Node heartbeats are not audited changes.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog, Change
from bastion.audit.signer import load_or_create_signer
from bastion.audit.witness import open_witness
from bastion.auth.issuer import HostCerts, Issuer
from bastion.auth.revocation import (
    longest_certificate_ttl,
    narrows,
    new_epoch,
    revocation_lock,
    sso_removal_lock,
)
from bastion.backend.base import Backend, Delete, Op
from bastion.ca import authority as ca_authority
from bastion.ca import rotation
from bastion.ca.jwt import ca_key_algorithm
from bastion.clock import Clock
from bastion.config.notifications import NotificationsConfig
from bastion.config.risk import RiskConfig
from bastion.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    BastionError,
    CompareFailed,
    NotFound,
)
from bastion.locks.matcher import LockDecision, LockTargets, LockView, decide
from bastion.mfa.policy import default_relying_party
from bastion.mfa.service import MFADeps, MFAService
from bastion.rbac.builtin import BUILTIN_ROLES
from bastion.recording.store import RecordingStore
from bastion.services.credentials import CredentialStore, hash_secret, new_secret, secrets_equal
from bastion.services.store import CONNECTORS_PREFIX, RESOURCE_PREFIXES, ResourceStore
from bastion.services.watched import WatchedStore
from bastion.types.access import (
    MIN_SESSION_TTL,
    AuthPreference,
    Lock,
    ProvisionToken,
    ProvisionTokenSpec,
    Role,
    User,
)
from bastion.types.apps import App
from bastion.types.authority import CA_TYPES, CAType, CertAuthority, KeyAlgorithm
from bastion.types.codec import RESOURCE_KINDS, validation_problems
from bastion.types.connectors import CONNECTOR_KINDS, keep_secrets
from bastion.types.database import Database
from bastion.types.identity import Identity
from bastion.types.inventory import Node, ProxyServer, node_online
from bastion.types.meta import Metadata, Resource

__all__ = [
    "INVITE_FATE_PREFIX",
    "INVITE_MEMORY",
    "INVITE_PREFIX",
    "AuthDeps",
    "AuthServer",
    "NewToken",
]

INVITE_PREFIX = "invites/"
"""Pending invites: ``invites/<sha256(token)>`` -> the user and the TOTP secret to enrol."""
INVITE_FATE_PREFIX = "invite_fates/"
"""What became of an invite, kept :data:`INVITE_MEMORY` past its expiry:
``invite_fates/<sha256(token)>`` -> the user, the invite's expiry and, once spent, when it was
used. The invite page tells an expired or used invite from a link that never was one."""
INVITE_MEMORY = timedelta(days=30)

HOST_CERT_TTL = timedelta(days=30)
NODE_HEARTBEAT_MAX_TTL = timedelta(minutes=10)
SYSTEM_ACTOR = "bastion"
"""The actor of changes the cluster makes itself (first start, lockouts)."""
MODIFY_ATTEMPTS = 20
_R = TypeVar("_R", bound=Resource)


@dataclass(frozen=True, slots=True)
class AuthDeps:
    backend: Backend
    clock: Clock
    cluster: str
    kek: bytes
    key_algorithm: KeyAlgorithm = "ed25519"
    public_url: str = "https://127.0.0.1:3025"
    """Where users reach the login endpoint; used in invite URLs."""
    audit_witness: str = ""
    """Where audit checkpoints are also published (file path or URL); empty: nowhere."""
    webauthn_origins: tuple[str, ...] = ()
    """Default WebAuthn origins (proxy, then auth public addresses); the first one's host is
    the default RP id. Empty: derived from ``public_url``. The auth preference overrides both."""
    recordings: RecordingStore | None = None
    """Session recording storage (None: the recording API is not served)."""
    recording_max_bytes: int = 1 << 30
    """Largest recording accepted from a node."""
    notifications: NotificationsConfig | None = None
    """Access request notices (webhooks, Slack, email); None: none are sent."""
    risk: RiskConfig | None = None
    """The ``risk:`` section (built-in rule thresholds for ``bctl risk``); None: defaults."""
    data_dir: Path | None = None
    """The auth server's data directory (caches kept across restarts); None: memory only."""


class ManagedKind(Protocol):
    """A resource kind whose writes need more than a store (:meth:`AuthServer.manage`)."""

    async def create(self, resource: Resource, actor: str, *, force: bool) -> Resource: ...

    async def update(self, resource: Resource, actor: str) -> Resource: ...

    async def delete(self, name: str, actor: str) -> None: ...


class LockAccess(Protocol):
    """A process's view of the locks (:class:`bastion.locks.watcher.LockWatcher`)."""

    async def check_access(self, identity: Identity, targets: LockTargets) -> LockDecision: ...


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str
    """The secret; shown once, stored only as a hash."""
    resource: ProvisionToken


class AuthServer:
    def __init__(self, deps: AuthDeps) -> None:
        self.deps = deps
        self.clock = deps.clock
        self.cluster = deps.cluster
        backend = deps.backend
        prefix = RESOURCE_PREFIXES
        self.users: ResourceStore[User] = ResourceStore(backend, User, prefix["user"])
        self.roles: ResourceStore[Role] = ResourceStore(backend, Role, prefix["role"])
        self.tokens: ResourceStore[ProvisionToken] = ResourceStore(
            backend, ProvisionToken, prefix["token"]
        )
        self.cas: ResourceStore[CertAuthority] = ResourceStore(
            backend, CertAuthority, prefix["cert_authority"]
        )
        self.nodes: ResourceStore[Node] = ResourceStore(backend, Node, prefix["node"])
        self.proxies: ResourceStore[ProxyServer] = ResourceStore(
            backend, ProxyServer, prefix["proxy"]
        )
        self.databases: ResourceStore[Database] = ResourceStore(backend, Database, prefix["db"])
        self.apps: ResourceStore[App] = ResourceStore(backend, App, prefix["app"])
        self.locks: ResourceStore[Lock] = ResourceStore(backend, Lock, prefix["lock"])
        self.prefs: ResourceStore[AuthPreference] = ResourceStore(
            backend, AuthPreference, prefix["cluster_auth_preference"]
        )
        # The lookups of every API request and proxied connection (the gate's user record,
        # a certificate's roles, the database a session asks for), answered from memory
        # in step with the change feed (services/watched.py); loaded on first use.
        self.watched_users = WatchedStore(self.users, backend, deps.clock)
        self.watched_roles = WatchedStore(self.roles, backend, deps.clock)
        self.watched_databases = WatchedStore(self.databases, backend, deps.clock)
        self.credentials = CredentialStore(backend)
        self.audit = AuditLog(backend, deps.clock, deps.cluster)
        self.issuer = Issuer(
            self.cas, deps.kek, deps.clock, self.audit, deps.cluster, roles=self.roles
        )
        self._checkpointer: Checkpointer | None = None
        self._lock_view: LockAccess | None = None
        self._tunnel_connected: Callable[[str], bool] | None = None
        self._other_proxies_until: datetime | None = None
        self._own_proxy = ""
        """Until when a proxy in its own process is known live (its heartbeats reach here)."""
        rp_id, origins = default_relying_party(deps.webauthn_origins or (deps.public_url,))
        self.mfa = MFAService(
            MFADeps(
                backend=backend,
                clock=deps.clock,
                audit=self.audit,
                cluster=deps.cluster,
                preference=self.auth_preference,
                default_rp_id=rp_id,
                default_origins=origins,
            )
        )
        self._stores: dict[str, ResourceStore[Any]] = {
            "user": self.users,
            "role": self.roles,
            "token": self.tokens,
            "cert_authority": self.cas,
            "node": self.nodes,
            "proxy": self.proxies,
            "db": self.databases,
            "app": self.apps,
            "lock": self.locks,
            "cluster_auth_preference": self.prefs,
        }
        for kind, model in CONNECTOR_KINDS.items():  # SSO connectors (see bastion.sso)
            self._stores[kind] = ResourceStore(backend, model, f"{CONNECTORS_PREFIX}/{kind}")
        for kind in ("trusted_cluster", "remote_cluster", "risk_rule"):  # trust, risk
            self._stores[kind] = ResourceStore(backend, RESOURCE_KINDS[kind], prefix[kind])
        self._managed: dict[str, ManagedKind] = {}

    # ---- audited changes -----------------------------------------------------------------------

    async def audited(
        self,
        event_type: str,
        ops: Sequence[Op],
        actor: str,
        target: str,
        *,
        outcome: str = "success",
        **fields: object,
    ) -> Change:
        """Store ``ops`` and their audit event in one backend transaction, or neither.

        The one helper every mutating path shares. A failed condition comes back with the
        owning store's message (``exc.key`` still names the key).

        Raises:
            AlreadyExists, NotFound, CompareFailed: an op's condition failed; nothing stored.
            ConnectionProblem: the backend failed; nothing stored.
        """
        try:
            return await self.audit.commit_change(
                event_type, ops, outcome=outcome, user=actor, target=target, **fields
            )
        except (AlreadyExists, NotFound, CompareFailed) as exc:
            raise self._explain(exc) from None

    async def audited_modify(
        self,
        store: ResourceStore[_R],
        name: str,
        change: Callable[[_R], Awaitable[tuple[_R, list[Op]]]],
        event_type: str,
        actor: str,
        target: str,
        **fields: Any,
    ) -> tuple[_R, Change]:
        """Read-modify-write of one resource with its event, retried on concurrent changes.

        ``change`` gets the current resource and returns the new one plus any further ops of the
        same transaction (built from fresh reads: a CompareFailed on any key retries all).
        """
        for _ in range(MODIFY_ATTEMPTS):
            current = await store.get(name)
            updated, extra = await change(current)
            try:
                done = await self.audited(
                    event_type, [store.update_op(updated), *extra], actor, target, **fields
                )
            except CompareFailed:
                continue
            except NotFound as exc:
                if exc.key == store.key(name):
                    raise
                continue  # an extra record vanished meanwhile (expired): read again
            return store.written(updated, done.items[0]), done
        raise CompareFailed(f'{store.kind} "{name}" is changing too fast; try again')

    async def external_step(
        self,
        event_type: str,
        step: Callable[[], Awaitable[None]],
        actor: str,
        target: str,
        **fields: Any,
    ) -> None:
        """A change that cannot share a transaction with its event: an intent event is stored
        first, then the step runs, then a completion event (outcome failure when the step
        failed). A crash in between leaves the intent without a completion in the log."""
        await self.audit.emit(event_type, user=actor, target=target, phase="intent", **fields)
        try:
            await step()
        except BaseException as exc:
            reason = exc.message if isinstance(exc, BastionError) else type(exc).__name__
            await self.audit.emit(
                event_type,
                outcome="failure",
                user=actor,
                target=target,
                phase="complete",
                reason=reason,
                **fields,
            )
            raise
        await self.audit.emit(event_type, user=actor, target=target, phase="complete", **fields)

    def _explain(self, exc: BastionError) -> BastionError:
        for store in self._stores.values():
            if exc.key is not None and store.owns(exc.key):
                return store.explain(exc)
        return exc

    # ---- first start -------------------------------------------------------------------------

    async def init(self, second_factor: str | None = None) -> list[str]:
        """Create whatever is missing: CAs, built-in roles, auth preference. Idempotent.

        Returns:
            What was created, for the start-up message.
        """
        created: list[str] = []
        actor = SYSTEM_ACTOR
        for ca_type in CA_TYPES:
            try:
                await self.issuer.ca(ca_type)
            except NotFound:
                algorithm = ca_key_algorithm(ca_type, self.deps.key_algorithm)
                ca = ca_authority.new_cert_authority(
                    ca_type, self.cluster, algorithm, self.deps.kek, self.clock
                )
                try:
                    target = f"cert_authority/{ca_type}"
                    await self.audited("ca.create", [self.cas.create_op(ca)], actor, target)
                    created.append(f"cert_authority/{ca_type}")
                except AlreadyExists:
                    pass  # another auth server won the race; use its CA
            ca = await self.issuer.ca(ca_type)
            if ca.spec.cluster != self.cluster:
                raise BadParameter(
                    f"the data in this backend belongs to cluster {ca.spec.cluster!r}, but the "
                    f"configuration says cluster_name {self.cluster!r}; fix cluster_name"
                )
        for role in BUILTIN_ROLES.values():
            try:
                await self.roles.get(role.name)
                continue
            except NotFound:
                pass
            try:
                await self.audited(
                    "role.create", [self.roles.create_op(role)], actor, f"role/{role.name}"
                )
                created.append(f"role/{role.name}")
            except AlreadyExists:
                pass
        kind = "cluster_auth_preference"
        try:
            pref = await self.prefs.get(AuthPreference.NAME)
        except NotFound:
            pref = AuthPreference(metadata=Metadata(name=AuthPreference.NAME))
            try:
                done = await self.audited(
                    "resource.create", [self.prefs.create_op(pref)], actor, kind, kind=kind
                )
                pref = self.prefs.written(pref, done.items[0])
                created.append(kind)
            except AlreadyExists:
                pref = await self.prefs.get(AuthPreference.NAME)
        if second_factor and pref.spec.second_factor != second_factor:
            pref.spec.second_factor = second_factor  # type: ignore[assignment]
            await self.audited(
                "resource.update",
                [self.prefs.update_op(pref)],
                actor,
                kind,
                kind=kind,
                second_factor=second_factor,
            )
        await self.audit_checkpointer()  # creates the checkpoint key on first start
        return created

    async def audit_checkpointer(self) -> Checkpointer:
        """The signer of audit checkpoints (its key is created on first use)."""
        if self._checkpointer is None:
            signer = await load_or_create_signer(
                self.deps.backend, self.deps.kek, self.cluster, self.clock
            )
            witness = open_witness(self.deps.audit_witness)
            self._checkpointer = Checkpointer(self.audit, signer, self.clock, witness)
        return self._checkpointer

    async def auth_preference(self) -> AuthPreference:
        return await self.prefs.get(AuthPreference.NAME)

    # ---- generic resources ---------------------------------------------------------------------

    def store(self, kind: str) -> ResourceStore[Any]:
        try:
            return self._stores[kind]
        except KeyError:
            raise BadParameter(f"unknown kind {kind!r}") from None

    def manage(self, kind: str, handler: ManagedKind) -> None:
        """Route creates, updates and deletes of ``kind`` to ``handler`` (trusted clusters:
        :mod:`bastion.auth.trust`); without one, the kind is refused for writes."""
        self._managed[kind] = handler

    def _managed_kind(self, kind: str) -> ManagedKind | None:
        if kind in ("trusted_cluster", "remote_cluster") and kind not in self._managed:
            raise BadParameter(f"{kind} resources are managed by a running cluster process")
        return self._managed.get(kind)

    async def create_resource(self, resource: Resource, actor: str, *, force: bool) -> Resource:
        if (managed := self._managed_kind(resource.kind)) is not None:
            return await managed.create(resource, actor, force=force)
        await self._check_references(resource)
        store = self.store(resource.kind)
        if resource.kind == "user":
            resource = self._user_defaults(resource, actor)
        if resource.kind == "lock":
            resource = self._lock_defaults(resource, actor)
        if resource.kind in CONNECTOR_KINDS:
            resource = await self._connector_secrets(resource)
        ops: list[Op] = [store.put_op(resource) if force else store.create_op(resource)]
        if isinstance(resource, User) and force:  # an overwrite revokes the old epoch
            ops += await self.revocation_ops(resource.name, "re-creation", actor)
        done = await self._audit_change(resource.kind, "create", resource.name, actor, ops)
        result: Resource = store.written(resource, done.items[0])
        return result

    async def update_resource(self, resource: Resource, actor: str) -> Resource:
        if (managed := self._managed_kind(resource.kind)) is not None:
            return await managed.update(resource, actor)
        await self._check_references(resource)
        if resource.kind in CONNECTOR_KINDS:
            resource = await self._connector_secrets(resource)
        store = self.store(resource.kind)
        ops: list[Op] = []
        if isinstance(resource, User):
            resource, ops = await self._user_epoch_on_update(resource, actor)
        done = await self._audit_change(
            resource.kind, "update", resource.name, actor, [store.update_op(resource), *ops]
        )
        result: Resource = store.written(resource, done.items[0])
        return result

    async def _user_epoch_on_update(self, user: User, actor: str) -> tuple[User, list[Op]]:
        """The epoch is the server's: kept as stored, or replaced (with the old one locked) when
        the change narrows the user's roles or traits (:mod:`bastion.auth.revocation`)."""
        stored = await self.users.get(user.name)
        user = user.model_copy(deep=True)
        user.spec.epoch = stored.spec.epoch
        user.spec.status.sign_up, user.spec.status.invite_expires = "", None  # computed only
        if not narrows(stored.spec, user.spec):
            return user, []
        user.spec.epoch = new_epoch()
        return user, await self.revocation_ops(user.name, "access change", actor, stored)

    async def revocation_ops(
        self, name: str, why: str, actor: str, user: User | None = None
    ) -> list[Op]:
        """Ops that revoke everything issued in the user's current epoch: the revocation lock
        and the deletes of the user's outstanding invites. Empty for a user that does not
        exist (or has no epoch yet: the gate alone refuses its old certificates)."""
        if user is None:
            try:
                user = await self.users.get(name)
            except NotFound:
                return []
        ops: list[Op] = [
            Delete(item.key, item.revision)
            for item in await self.deps.backend.get_range(INVITE_PREFIX)
            if _invite_user(item.value) == name
        ]
        ttl = longest_certificate_ttl(await self.roles.list())
        lock = revocation_lock(user, why, actor, self.clock.now(), ttl)
        if lock is not None:
            ops.append(self.locks.put_op(lock))
        return ops

    async def delete_resource(self, kind: str, name: str, actor: str) -> None:
        if (managed := self._managed_kind(kind)) is not None:
            return await managed.delete(name, actor)
        if kind == "cert_authority":
            raise BadParameter("certificate authorities cannot be deleted; rotate them instead")
        if kind == "cluster_auth_preference":
            raise BadParameter("the cluster auth preference cannot be deleted; update it instead")
        if kind == "role" and name in BUILTIN_ROLES:
            users = [u.name for u in await self.users.list() if name in u.spec.roles]
            if users:
                raise BadParameter(
                    f'role "{name}" is assigned to {", ".join(users)}; remove it from them first'
                )
        store = self.store(kind)
        if kind != "user":
            await self._audit_change(kind, "delete", name, actor, [store.delete_op(name)])
            return
        try:
            user = await self.users.get(name)  # NotFound before any MFA data is touched
        except NotFound:
            if await self._sso_user_name(name):
                return await self._remove_sso_user(name, actor)
            raise
        # MFA data belongs to bastion.mfa (no ops to share a transaction): removed first, with
        # intent + completion events, so a crash never leaves a deleted user's keys behind
        # for a new user of the same name.
        await self.external_step(
            "mfa.forget", lambda: self.mfa.forget_user(name), actor, f"user/{name}"
        )
        for _ in range(MODIFY_ATTEMPTS):
            ops: list[Op] = [store.delete_op(name, user.metadata.revision)]
            creds = await self.credentials.delete_op(name)
            ops += [creds] if creds is not None else []
            ops += await self.revocation_ops(name, "deletion", actor, user)
            try:
                await self._audit_change(kind, "delete", name, actor, ops)
                await self.mfa.challenges.forget_user(name)
                return
            except (CompareFailed, NotFound) as exc:
                if exc.key == store.key(name) and isinstance(exc, NotFound):
                    raise
                user = await self.users.get(name)
        raise CompareFailed(f'user "{name}" is changing too fast; try again')

    async def _sso_user_name(self, name: str) -> bool:
        """Is ``name`` an SSO user's (``connector:username`` of an existing connector)?"""
        connector, sep, username = name.partition(":")
        if not sep or not connector or not username:
            return False
        for kind in CONNECTOR_KINDS:
            try:
                await self.store(kind).get(connector)
                return True
            except NotFound:
                continue
        return False

    async def _remove_sso_user(self, name: str, actor: str) -> None:
        """Deprovision an SSO user: a lock on the user, committed with its audit event, cuts
        live sessions and refuses new certificates while any old one may still be valid."""
        ttl = longest_certificate_ttl(await self.roles.list())
        lock = sso_removal_lock(name, actor, self.clock.now(), ttl)
        await self.audited(
            "user.delete",
            [self.locks.put_op(lock)],
            actor,
            f"user/{name}",
            sso=True,
            lock=lock.name,
        )

    async def _check_references(self, resource: Resource) -> None:
        if isinstance(resource, User):
            known = {r.name for r in await self.roles.list()}
            missing = [r for r in resource.spec.roles if r not in known]
            if missing:
                raise BadParameter(
                    f'user "{resource.name}": spec.roles: unknown role(s) {", ".join(missing)}; '
                    "create them first (bctl get roles lists the existing ones)"
                )
        if isinstance(resource, CertAuthority):
            raise BadParameter(
                "certificate authorities are managed by the cluster: use bctl auth rotate"
            )

    async def _connector_secrets(self, resource: Resource) -> Resource:
        """Keep stored secrets where the client sent back the redacted placeholder."""
        try:
            stored: Resource | None = await self.store(resource.kind).get(resource.name)
        except NotFound:
            stored = None
        try:
            return keep_secrets(resource, stored)
        except ValueError as exc:
            raise BadParameter(f'{resource.kind} "{resource.name}": {exc}') from None

    def _user_defaults(self, resource: Resource, actor: str) -> Resource:
        assert isinstance(resource, User)
        user = resource.model_copy(deep=True)
        user.spec.created_by = user.spec.created_by or actor
        user.spec.created = user.spec.created or self.clock.now()
        user.spec.epoch = new_epoch()  # a new user (or an overwrite) starts a new epoch
        user.spec.status.sign_up, user.spec.status.invite_expires = "", None  # computed only
        return user

    def _lock_defaults(self, resource: Resource, actor: str) -> Resource:
        assert isinstance(resource, Lock)
        lock = resource.model_copy(deep=True)
        lock.spec.created_by = lock.spec.created_by or actor
        lock.spec.created = lock.spec.created or self.clock.now()
        return lock

    async def _audit_change(
        self, kind: str, verb: str, name: str, actor: str, ops: Sequence[Op]
    ) -> Change:
        event_type = f"{kind}.{verb}" if kind in ("user", "role", "token", "lock") else None
        if kind in CONNECTOR_KINDS:
            event_type = f"connector.{verb}"
        return await self.audited(
            event_type or f"resource.{verb}", ops, actor, f"{kind}/{name}", kind=kind
        )

    # ---- join tokens ---------------------------------------------------------------------------

    async def add_token(
        self, roles: list[str], ttl: timedelta, labels: dict[str, str], actor: str
    ) -> NewToken:
        secret = new_secret(24)
        digest = hash_secret(secret)
        try:  # bad roles or labels from the request: a clear error, not an internal one
            spec = ProvisionTokenSpec(
                roles=roles, secret_hash=digest, labels=labels, created_by=actor
            )
        except ValidationError as exc:
            raise BadParameter(f"token: {validation_problems(exc)}") from None
        token = ProvisionToken(
            metadata=Metadata(name=digest[:32], expires=self.clock.now() + ttl), spec=spec
        )
        done = await self.audited(
            "token.create",
            [self.tokens.create_op(token)],
            actor,
            f"token/{token.name}",
            roles=roles,
            ttl_seconds=int(ttl.total_seconds()),
        )
        return NewToken(token=secret, resource=self.tokens.written(token, done.items[0]))

    async def join(
        self,
        token: str,
        host_name: str,
        role: str,
        public_key: str,
        dns_names: list[str],
        ip_addresses: list[str],
        remote_addr: str,
        ttl: timedelta | None = None,
    ) -> HostCerts:
        """Exchange a join token for a host identity (SSH host cert + X.509 host cert), valid
        for ``ttl`` (1 minute to :data:`HOST_CERT_TTL`, the default)."""
        host_ttl = HOST_CERT_TTL if ttl is None else min(max(ttl, MIN_SESSION_TTL), HOST_CERT_TTL)
        digest = hash_secret(token)
        try:
            stored = await self.tokens.get(digest[:32])
        except NotFound:
            stored = None
        if stored is None or not secrets_equal(stored.spec.secret_hash, digest):
            await self._join_refused(host_name, remote_addr, "unknown, expired or used join token")
            raise AccessDenied("join token is invalid, expired or already used")
        if role not in stored.spec.roles or role == "trusted_cluster":  # leaves never join
            await self._join_refused(host_name, remote_addr, f"token does not allow role {role}")
            raise AccessDenied(f"this join token does not allow joining as {role!r}")
        if role == "node" and await self.node_name_taken(host_name):
            await self._join_refused(host_name, remote_addr, "node name already in use")
            raise AccessDenied(
                f"node name {host_name!r} is already in use by another host; pick another name"
            )
        locked = await self.lock_decision(LockTargets(nodes=(host_name,)))
        if not locked.allowed:
            await self._join_refused(host_name, remote_addr, locked.reason)
            locked.raise_if_denied()
        host_id = str(uuid.uuid4())
        joined = {
            "user": host_id,
            "target": f"{role}/{host_name}",
            "remote_addr": remote_addr,
            "host_id": host_id,
            "role": role,
            "token": stored.name,
        }
        if stored.spec.single_use:
            # The token is spent together with the join event: one transaction.
            spend = self.tokens.delete_op(stored.name, stored.metadata.revision)
            try:
                await self.audit.commit_change("join", [spend], **joined)
            except (NotFound, CompareFailed):
                await self._join_refused(host_name, remote_addr, "join token used concurrently")
                raise AccessDenied("join token is invalid, expired or already used") from None
        identity = Identity(
            cluster=self.cluster,
            user=host_id,
            kind="host",
            roles=(role,),
            host_id=host_id,
            traits={"hostname": (host_name,), **{k: (v,) for k, v in stored.spec.labels.items()}},
            expires=self.clock.now() + host_ttl,
        )
        principals = [host_id, host_name, f"{host_name}.{self.cluster}", *ip_addresses]
        try:
            certs = await self.issuer.issue_host(
                identity,
                public_key,
                principals,
                [host_name, *dns_names],
                ip_addresses,
                host_ttl,
                remote_addr,
            )
        except BastionError as exc:
            if stored.spec.single_use:  # the join event is stored: say it did not complete
                await self._join_refused(host_name, remote_addr, f"no certificate: {exc.message}")
            raise
        if not stored.spec.single_use:  # nothing stored: the event follows the issuance
            await self.audit.emit("join", **joined)
        return certs

    async def _join_refused(self, host_name: str, remote_addr: str, reason: str) -> None:
        await self.audit.emit(
            "join", outcome="failure", target=host_name, remote_addr=remote_addr, reason=reason
        )

    async def sign_host(
        self, host_name: str, public_key: str, principals: list[str], ttl: timedelta, actor: str
    ) -> HostCerts:
        """Host certificate for an agentless OpenSSH server (``bctl auth sign --host``)."""
        identity = Identity(
            cluster=self.cluster,
            user=host_name,
            kind="host",
            roles=("node",),
            host_id=host_name,
            expires=self.clock.now() + ttl,
        )
        names = sorted({host_name, f"{host_name}.{self.cluster}", *principals})
        return await self.issuer.issue_host(identity, public_key, names, names, [], ttl, actor)

    # ---- inventory -----------------------------------------------------------------------------

    async def heartbeat_node(self, node: Node, host_id: str, remote_addr: str) -> Node:
        """Upsert a node's heartbeat; a name is bound to the first live host that holds it.

        Raises:
            AccessDenied: the name belongs to another host.
            Locked: a lock covers the node (its name or host id).
        """
        await self._refuse_locked_node((node.name, host_id), remote_addr)
        try:
            existing: Node | None = await self.nodes.get(node.name)
        except NotFound:
            existing = None
        if existing is not None and existing.spec.host_id and existing.spec.host_id != host_id:
            await self.audit.emit(
                "node.rejected",
                outcome="failure",
                user=host_id,
                target=f"node/{node.name}",
                remote_addr=remote_addr,
                reason=f"name already held by host {existing.spec.host_id}",
            )
            raise AccessDenied(f"node name {node.name!r} is already in use by another host")
        now = self.clock.now()
        latest = now + NODE_HEARTBEAT_MAX_TTL
        expires = node.metadata.expires
        node = node.model_copy(deep=True)
        node.spec.host_id = host_id
        node.metadata.expires = min(expires, latest) if expires else latest
        node.metadata.revision = ""
        stored: Node = await self.nodes.upsert(node)
        return stored

    async def heartbeat_proxy(self, proxy: ProxyServer, host_id: str) -> ProxyServer:
        """Upsert a proxy's heartbeat (agents read the list to keep a tunnel to each proxy).

        Raises:
            AccessDenied: the name belongs to another live proxy host.
        """
        try:
            existing: ProxyServer | None = await self.proxies.get(proxy.name)
        except NotFound:
            existing = None
        if existing is not None and existing.spec.host_id not in ("", host_id):
            raise AccessDenied(f"proxy name {proxy.name!r} is already in use by another host")
        latest = self.clock.now() + NODE_HEARTBEAT_MAX_TTL
        expires = proxy.metadata.expires
        proxy = proxy.model_copy(deep=True)
        proxy.spec.host_id = host_id
        proxy.metadata.expires = min(expires, latest) if expires else latest
        proxy.metadata.revision = ""
        stored: ProxyServer = await self.proxies.upsert(proxy)
        if proxy.metadata.expires is not None and proxy.name != self._own_proxy:
            until = self._other_proxies_until
            self._other_proxies_until = (
                max(until, proxy.metadata.expires) if until else (proxy.metadata.expires)
            )
        return stored

    def use_tunnel_presence(self, connected: Callable[[str], bool], own_proxy: str) -> None:
        """Tell node liveness from the reverse tunnels of the proxy in this process (the
        all-in-one ``bastion start``, advertised as the ``proxy`` resource ``own_proxy``):
        ``connected(host_id)`` is whether that agent's tunnel is up. Without it, liveness is the
        heartbeat's freshness alone. While other proxies heartbeat here, an agent may hold its
        tunnel to one of them only (or not yet to this one): a missing tunnel here then proves
        nothing and the heartbeat's freshness decides."""
        self._tunnel_connected = connected
        self._own_proxy = own_proxy

    def node_online(self, node: Node) -> bool | None:
        """Whether ``node`` is reachable as far as this process knows (see
        :func:`bastion.types.inventory.node_online`); None for an agentless node."""
        tunnel = None
        now = self.clock.now()
        if self._tunnel_connected is not None and node.spec.host_id:
            tunnel = self._tunnel_connected(node.spec.host_id)
            if tunnel is False and self._other_proxies_until and now < self._other_proxies_until:
                tunnel = None  # its tunnel may be to a proxy in its own process: heartbeat decides
        return node_online(node, now, tunnel)

    def use_lock_view(self, view: LockAccess) -> None:
        """Decide identities' locks from ``view`` (the process's lock watcher: in memory, kept
        current by a backend watch, strict mode refusing when it is stale) instead of reading
        every lock from the backend per request."""
        self._lock_view = view

    async def lock_access(self, identity: Identity, targets: LockTargets) -> LockDecision:
        """The lock decision for an access by ``identity`` (its lock mode applied when a lock
        view is in use; otherwise read straight from the backend: always current)."""
        if self._lock_view is not None:
            return await self._lock_view.check_access(identity, targets)
        return await self.lock_decision(targets)

    async def lock_decision(self, targets: LockTargets) -> LockDecision:
        """Locks read straight from the backend (always current here, so never "unknown")."""
        now = self.clock.now()
        view = LockView(tuple(await self.locks.list()), healthy=True, synced_at=now)
        return decide(view, targets, "best_effort", now)

    async def _refuse_locked_node(self, names: tuple[str, ...], remote_addr: str) -> None:
        """Raises: Locked (audited as node.rejected) when a lock covers the node."""
        decision = await self.lock_decision(LockTargets(nodes=names))
        if decision.allowed:
            return
        await self.audit.emit(
            "node.rejected",
            outcome="failure",
            user=names[-1],
            target=f"node/{names[0]}",
            remote_addr=remote_addr,
            reason=decision.reason,
        )
        decision.raise_if_denied()

    async def node_name_taken(self, name: str, host_id: str = "") -> bool:
        try:
            existing = await self.nodes.get(name)
        except NotFound:
            return False
        return bool(existing.spec.host_id) and existing.spec.host_id != host_id

    # ---- certificate authorities ---------------------------------------------------------------

    async def rotate_ca(self, ca_type: CAType, phase: str, actor: str) -> CertAuthority:
        async def change(ca: CertAuthority) -> CertAuthority:
            new_key = None
            if phase == "init":
                algorithm = ca_key_algorithm(ca_type, self.deps.key_algorithm)
                new_key = ca_authority.new_keypair(
                    ca_type, self.cluster, algorithm, self.deps.kek, self.clock.now()
                )
            return rotation.next_phase(ca, phase, new_key, self.clock.now())  # type: ignore[arg-type]

        async def with_ops(ca: CertAuthority) -> tuple[CertAuthority, list[Op]]:
            return await change(ca), []

        name = ca_authority.ca_name(ca_type, self.cluster)
        target = f"cert_authority/{ca_type}"
        result, _ = await self.audited_modify(
            self.cas, name, with_ops, "ca.rotate", actor, target, phase=phase
        )
        return result

    async def export_ca(self, ca_type: CAType, fmt: str = "") -> str:
        return ca_authority.export_trust(await self.issuer.ca(ca_type), fmt or None)  # type: ignore[arg-type]


def _invite_user(value: bytes) -> str:
    """The user an invite record is for ("" when unreadable)."""
    try:
        record = json.loads(value)
    except ValueError:
        return ""
    return str(record.get("user", "")) if isinstance(record, dict) else ""


def default_cluster_name() -> str:
    return socket.gethostname() or "bastion"
