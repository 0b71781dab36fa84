"""AuthServer: the control plane's trusted core (no RBAC inside; see guarded.py for that).

It owns the stores, creates the certificate authorities and built-in resources at first start,
and implements resource changes, join tokens and CA operations, auditing each one. User
credentials and login live in :mod:`.users`; certificate signing in :mod:`.issuer`.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog
from bastion.audit.signer import load_or_create_signer
from bastion.audit.witness import open_witness
from bastion.auth.credentials import CredentialStore, hash_secret, new_secret, secrets_equal
from bastion.auth.issuer import HostCerts, Issuer
from bastion.backend.base import Backend
from bastion.ca import authority as ca_authority
from bastion.ca import rotation
from bastion.clock import Clock
from bastion.errors import AccessDenied, AlreadyExists, BadParameter, CompareFailed, NotFound
from bastion.locks.matcher import LockDecision, LockTargets, LockView, decide
from bastion.mfa.policy import default_relying_party
from bastion.mfa.service import MFADeps, MFAService
from bastion.rbac.builtin import BUILTIN_ROLES
from bastion.recording.store import RecordingStore
from bastion.services.store import ResourceStore
from bastion.types.access import (
    AuthPreference,
    Lock,
    ProvisionToken,
    ProvisionTokenSpec,
    Role,
    User,
)
from bastion.types.authority import CA_TYPES, CAType, CertAuthority, KeyAlgorithm
from bastion.types.codec import validation_problems
from bastion.types.connectors import CONNECTOR_KINDS, keep_secrets
from bastion.types.identity import Identity
from bastion.types.inventory import Node
from bastion.types.meta import Metadata, Resource

__all__ = ["AuthDeps", "AuthServer", "NewToken"]

HOST_CERT_TTL = timedelta(days=30)
NODE_HEARTBEAT_MAX_TTL = timedelta(minutes=10)


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
        self.users: ResourceStore[User] = ResourceStore(backend, User, "users")
        self.roles: ResourceStore[Role] = ResourceStore(backend, Role, "roles")
        self.tokens: ResourceStore[ProvisionToken] = ResourceStore(
            backend, ProvisionToken, "tokens"
        )
        self.cas: ResourceStore[CertAuthority] = ResourceStore(
            backend, CertAuthority, "authorities"
        )
        self.nodes: ResourceStore[Node] = ResourceStore(backend, Node, "nodes")
        self.locks: ResourceStore[Lock] = ResourceStore(backend, Lock, "locks")
        self.prefs: ResourceStore[AuthPreference] = ResourceStore(
            backend, AuthPreference, "cluster_config"
        )
        self.credentials = CredentialStore(backend)
        self.audit = AuditLog(backend, deps.clock, deps.cluster)
        self.issuer = Issuer(self.cas, deps.kek, deps.clock, self.audit, deps.cluster)
        self._checkpointer: Checkpointer | None = None
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
            "lock": self.locks,
            "cluster_auth_preference": self.prefs,
        }
        for kind, model in CONNECTOR_KINDS.items():  # SSO connectors (see bastion.sso)
            self._stores[kind] = ResourceStore(backend, model, f"connectors/{kind}")

    # ---- first start -------------------------------------------------------------------------

    async def init(self, second_factor: str | None = None) -> list[str]:
        """Create whatever is missing: CAs, built-in roles, auth preference. Idempotent.

        Returns:
            What was created, for the start-up message.
        """
        created: list[str] = []
        for ca_type in CA_TYPES:
            try:
                await self.issuer.ca(ca_type)
            except NotFound:
                ca = ca_authority.new_cert_authority(
                    ca_type, self.cluster, self.deps.key_algorithm, self.deps.kek, self.clock
                )
                try:
                    await self.cas.create(ca)
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
                await self.roles.create(role)
                created.append(f"role/{role.name}")
            except AlreadyExists:
                pass
        try:
            pref = await self.prefs.get(AuthPreference.NAME)
        except NotFound:
            pref = await self.prefs.create(
                AuthPreference(metadata=Metadata(name=AuthPreference.NAME))
            )
            created.append("cluster_auth_preference")
        if second_factor and pref.spec.second_factor != second_factor:
            pref.spec.second_factor = second_factor  # type: ignore[assignment]
            await self.prefs.update(pref)
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

    async def create_resource(self, resource: Resource, actor: str, *, force: bool) -> Resource:
        await self._check_references(resource)
        store = self.store(resource.kind)
        if resource.kind == "user":
            resource = self._user_defaults(resource, actor)
        if resource.kind == "lock":
            resource = self._lock_defaults(resource, actor)
        if resource.kind in CONNECTOR_KINDS:
            resource = await self._connector_secrets(resource)
        result: Resource = await (store.upsert(resource) if force else store.create(resource))
        await self._audit_change(resource.kind, "create", resource.name, actor)
        return result

    async def update_resource(self, resource: Resource, actor: str) -> Resource:
        await self._check_references(resource)
        if resource.kind in CONNECTOR_KINDS:
            resource = await self._connector_secrets(resource)
        result: Resource = await self.store(resource.kind).update(resource)
        await self._audit_change(resource.kind, "update", resource.name, actor)
        return result

    async def delete_resource(self, kind: str, name: str, actor: str) -> None:
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
        await self.store(kind).delete(name)
        if kind == "user":
            await self.credentials.delete(name)
            await self.mfa.forget_user(name)
        await self._audit_change(kind, "delete", name, actor)

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
        return user

    def _lock_defaults(self, resource: Resource, actor: str) -> Resource:
        assert isinstance(resource, Lock)
        lock = resource.model_copy(deep=True)
        lock.spec.created_by = lock.spec.created_by or actor
        lock.spec.created = lock.spec.created or self.clock.now()
        return lock

    async def _audit_change(self, kind: str, verb: str, name: str, actor: str) -> None:
        event_type = f"{kind}.{verb}" if kind in ("user", "role", "token", "lock") else None
        if kind in CONNECTOR_KINDS:
            event_type = f"connector.{verb}"
        await self.audit.emit(
            event_type or f"resource.{verb}", user=actor, target=f"{kind}/{name}", kind=kind
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
        stored = await self.tokens.create(token)
        await self.audit.emit(
            "token.create",
            user=actor,
            target=f"token/{token.name}",
            roles=roles,
            ttl_seconds=int(ttl.total_seconds()),
        )
        return NewToken(token=secret, resource=stored)

    async def join(
        self,
        token: str,
        host_name: str,
        role: str,
        public_key: str,
        dns_names: list[str],
        ip_addresses: list[str],
        remote_addr: str,
    ) -> HostCerts:
        """Exchange a join token for a host identity (SSH host cert + X.509 host cert)."""
        digest = hash_secret(token)
        try:
            stored = await self.tokens.get(digest[:32])
        except NotFound:
            stored = None
        if stored is None or not secrets_equal(stored.spec.secret_hash, digest):
            await self._join_refused(host_name, remote_addr, "unknown, expired or used join token")
            raise AccessDenied("join token is invalid, expired or already used")
        if role not in stored.spec.roles:
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
        if stored.spec.single_use:
            try:
                await self.deps.backend.delete(
                    self.tokens.key(stored.name), expected_revision=int(stored.metadata.revision)
                )
            except (NotFound, CompareFailed):
                await self._join_refused(host_name, remote_addr, "join token used concurrently")
                raise AccessDenied("join token is invalid, expired or already used") from None
        host_id = str(uuid.uuid4())
        identity = Identity(
            cluster=self.cluster,
            user=host_id,
            kind="host",
            roles=(role,),
            host_id=host_id,
            traits={"hostname": (host_name,), **{k: (v,) for k, v in stored.spec.labels.items()}},
            expires=self.clock.now() + HOST_CERT_TTL,
        )
        principals = [host_id, host_name, f"{host_name}.{self.cluster}", *ip_addresses]
        certs = await self.issuer.issue_host(
            identity,
            public_key,
            principals,
            [host_name, *dns_names],
            ip_addresses,
            HOST_CERT_TTL,
            remote_addr,
        )
        await self.audit.emit(
            "join",
            user=host_id,
            target=f"{role}/{host_name}",
            remote_addr=remote_addr,
            host_id=host_id,
            role=role,
            token=stored.name,
        )
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
                new_key = ca_authority.new_keypair(
                    ca_type, self.cluster, self.deps.key_algorithm, self.deps.kek, self.clock.now()
                )
            return rotation.next_phase(ca, phase, new_key, self.clock.now())  # type: ignore[arg-type]

        result = await self.cas.modify(ca_authority.ca_name(ca_type, self.cluster), change)
        await self.audit.emit(
            "ca.rotate", user=actor, target=f"cert_authority/{ca_type}", phase=phase
        )
        return result

    async def export_ca(self, ca_type: CAType, fmt: str = "") -> str:
        return ca_authority.export_trust(await self.issuer.ca(ca_type), fmt or None)  # type: ignore[arg-type]


def default_cluster_name() -> str:
    return socket.gethostname() or "bastion"
