"""Trusted clusters in the auth server: establishing trust, and root users on a leaf.

Layer: auth (domain). Both sides of one relationship (docs/trusted-clusters.md):

* **root** (:func:`validate_leaf`): a leaf presents a ``trusted_cluster`` join token and its
  CAs' public parts; the token is spent and a ``remote_cluster`` record holding the leaf's CAs
  is stored in one audited transaction, and the root's CAs are returned. The leaf's CAs are
  trusted for that leaf's reverse tunnel only: they never join the root's own trust anchors,
  so nothing a leaf signs is accepted as a root identity.
* **leaf** (:class:`TrustService`): ``bctl create -f trusted_cluster.yaml`` calls the root
  (through a :class:`RootDialer` the process provides: the CA pin is checked as for agents),
  then stores the resource with the root's CAs in ``status`` (the token is never stored).
  ``enabled: false`` suspends, deleting removes the root's CAs with the record.
  :meth:`TrustService.remote_identity` turns a root-signed user certificate into a leaf
  identity: verified against the root's user CA of *that* trust only (identity cluster must be
  the root's name, never this cluster's), roles mapped through ``role_map`` (no mapping, no
  access), logins and TTL from the leaf's own roles.
* **CA rotation** on either side reaches the other through the leaf's tunnel:
  :meth:`TrustService.update_root_cas` (leaf side) and :meth:`TrustService.update_leaf_cas`
  (root side) store what the other cluster pushed; :meth:`TrustService.tunnel_certificate`
  re-issues the leaf proxy's tunnel certificate once its host TLS CA signs with a new key.

Per-session MFA for a leaf node: the root's session-certificate endpoint
(:mod:`bastion.auth.session_certs`) signs a 1-minute root certificate scoped
``session:<leaf>/<node>:<login>`` (:func:`leaf_session_scope`; cluster and node names never
contain ``/`` or ``:``), routed to that leaf. :func:`leaf_session_mfa` (pure) is how the leaf
reads it: only a scope naming exactly this leaf, with a matching route and a single login the
leaf's roles allow, counts; it becomes the leaf's own ``session:<node>:<login>`` form (checked by
the leaf's proxy and node as for local sessions). Any other MFA scope counts as no MFA.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.auth.device_attest import spki_sha256
from bastion.auth.issuer import UserCerts
from bastion.auth.server import AuthServer
from bastion.backend.base import Op
from bastion.ca.x509 import verify_certificate_chain
from bastion.contract.trust import TrustAnswer, ValidateTrust
from bastion.errors import AccessDenied, BadParameter, CompareFailed, NotFound
from bastion.rbac.checker import RoleSet
from bastion.rbac.device_trust import KeyAttestation
from bastion.rbac.role_map import map_roles
from bastion.rbac.session_mfa import is_session_identity, parse_session_scope, session_scope
from bastion.services.credentials import hash_secret, secrets_equal
from bastion.services.store import ResourceStore
from bastion.types.access import Role
from bastion.types.authority import CAType, CertAuthority
from bastion.types.identity import Identity, RouteToTarget
from bastion.types.inventory import ProxyServer
from bastion.types.meta import Metadata, Resource
from bastion.types.trust import (
    TRUSTED_CLUSTER_TOKEN_ROLE,
    ClusterCAs,
    RemoteCluster,
    RemoteClusterSpec,
    TrustedCluster,
    TrustedClusterStatus,
    remote_user_name,
)

__all__ = [
    "PUSHED_CA_TYPES",
    "REMOTE_ONLINE_GRACE",
    "RemoteClusters",
    "RootDialer",
    "TUNNEL_CERT_TTL",
    "TrustService",
    "cluster_cas",
    "leaf_scope_target",
    "leaf_session_mfa",
    "leaf_session_scope",
    "public_cas",
    "validate_leaf",
]


def leaf_session_scope(leaf: str, node: str, login: str) -> str:
    """``session:<leaf>/<node>:<login>``: the per-session MFA scope of a leaf node (pure).

    Raises:
        ValueError: an empty part, or a cluster or node name containing ``/`` or ``:``.
    """
    if not leaf or not node or "/" in leaf or "/" in node or ":" in leaf:
        raise ValueError(f"cannot scope a session to {leaf!r}/{node!r}")
    return session_scope(f"{leaf}/{node}", login)


def leaf_scope_target(scope: str, leaf: str) -> tuple[str, str] | None:
    """``(node, login)`` when ``scope`` is a leaf session scope naming exactly ``leaf``; None
    for any other scope (another leaf, a root node, malformed) (pure)."""
    parsed = parse_session_scope(scope)
    if parsed is None or not leaf:
        return None
    target, login = parsed
    cluster, sep, node = target.partition("/")
    if not sep or cluster != leaf or not node or "/" in node:
        return None
    return node, login


def leaf_session_mfa(root: Identity, leaf: str, logins: tuple[str, ...]) -> dict[str, Any]:
    """The MFA fields the leaf ``leaf`` gives the mapped identity of ``root`` (pure).

    A root per-session certificate counts only when its scope names exactly this leaf, its route
    is that leaf, node and login, it carries that one login, and ``logins`` (what the leaf's
    roles allow) include it: then the identity is narrowed to the leaf-local session form
    (``session:<node>:<login>``, a route to the node, one login). Anything else scoped to a
    session (another leaf or node or login, a root node) is treated as no MFA; other MFA fields
    (not session-scoped) pass as the root attested them.
    """
    if not is_session_identity(root):
        return {
            "mfa_verified": root.mfa_verified,
            "mfa_scope": root.mfa_scope,
            "mfa_device": root.mfa_device,
        }
    none: dict[str, Any] = {"mfa_verified": False, "mfa_scope": "", "mfa_device": ""}
    target = leaf_scope_target(root.mfa_scope, leaf)
    route = root.route
    if target is None or not root.mfa_verified or route is None:
        return none
    node, login = target
    if (route.cluster, route.node, route.login) != (leaf, node, login):
        return none
    if root.logins != (login,) or login not in logins:
        return none
    return {
        "mfa_verified": True,
        "mfa_scope": session_scope(node, login),
        "mfa_device": root.mfa_device,
        "route": RouteToTarget(cluster=leaf, node=node, login=login),
        "logins": (login,),
    }


TUNNEL_CERT_TTL = timedelta(days=30)
"""Lifetime of a leaf proxy's tunnel certificate re-issued after a host TLS CA rotation."""


class RootDialer(Protocol):
    """How a leaf reaches a root's proxy (:mod:`bastion.proxy.cluster_route`): check the
    root's CA against ``ca_pin``, then call ``POST /v1/trust/validate``."""

    async def validate(self, proxy_addr: str, ca_pin: str, body: ValidateTrust) -> TrustAnswer:
        """Raises: BadParameter (pin mismatch), AccessDenied (token), ConnectionProblem."""
        ...


def trusted_store(auth: AuthServer) -> ResourceStore[TrustedCluster]:
    store: ResourceStore[TrustedCluster] = auth.store("trusted_cluster")
    return store


def remote_store(auth: AuthServer) -> ResourceStore[RemoteCluster]:
    store: ResourceStore[RemoteCluster] = auth.store("remote_cluster")
    return store


REMOTE_ONLINE_GRACE = timedelta(seconds=90)
"""A leaf with a younger ``online`` heartbeat (root proxies write it every 30 s while they hold a
tunnel of it) is not set ``offline`` by a proxy in its own process that holds none."""
PUSHED_CA_TYPES: tuple[CAType, ...] = ("tls_user", "tls_host", "ssh_user", "ssh_host")
"""The CAs a cluster sends the other side of a trust (public parts only)."""


async def cluster_cas(auth: AuthServer) -> ClusterCAs:
    """This cluster's CAs, public parts only (every trusted key: rotation keeps working)."""
    return public_cas(auth.cluster, {t: await auth.issuer.ca(t) for t in PUSHED_CA_TYPES})


def public_cas(cluster: str, cas: Mapping[CAType, CertAuthority]) -> ClusterCAs:
    """The public parts of ``cluster``'s CAs (:data:`PUSHED_CA_TYPES`, by type): every trusted
    key's certificate or public key, never a private key (pure: also used by a proxy in its own
    process, over the secret-free CA records of its watch)."""
    tls_user, tls_host = cas["tls_user"], cas["tls_host"]
    ssh_user, ssh_host = cas["ssh_user"], cas["ssh_host"]
    return ClusterCAs(
        cluster=cluster,
        tls_user_ca="".join(k.cert_pem for k in tls_user.spec.trusted_keys()),
        tls_host_ca="".join(k.cert_pem for k in tls_host.spec.trusted_keys()),
        ssh_user_ca=[k.public_key for k in ssh_user.spec.trusted_keys()],
        ssh_host_ca=[k.public_key for k in ssh_host.spec.trusted_keys()],
    )


def _check_cas(cas: ClusterCAs, who: str) -> None:
    """Raises: BadParameter when the CA material does not load or is not CA certificates."""
    try:
        for pem in (cas.tls_user_ca, cas.tls_host_ca):
            certs = x509.load_pem_x509_certificates(pem.encode())
            for cert in certs:
                basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
                if not basic.ca:
                    raise ValueError("a certificate that is not a CA")
        for line in (*cas.ssh_user_ca, *cas.ssh_host_ca):
            serialization.load_ssh_public_key(line.encode())
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise BadParameter(f"the CAs of {who} do not load: {exc}") from None
    if not (cas.tls_user_ca and cas.tls_host_ca and cas.ssh_user_ca and cas.ssh_host_ca):
        raise BadParameter(f"the CAs of {who} are incomplete")


async def validate_leaf(auth: AuthServer, body: ValidateTrust, remote_addr: str) -> TrustAnswer:
    """Root side: spend the token and record the leaf (``remote_cluster``), atomically.

    Raises:
        AccessDenied: unknown, expired or used token, or not a ``trusted_cluster`` token.
        BadParameter: the leaf claims this cluster's name or sends unusable CAs.
    """
    leaf = body.leaf.cluster
    digest = hash_secret(body.token)
    try:
        token = await auth.tokens.get(digest[:32])
    except NotFound:
        token = None
    refused = ""
    if token is None or not secrets_equal(token.spec.secret_hash, digest):
        refused = "unknown, expired or used join token"
    elif TRUSTED_CLUSTER_TOKEN_ROLE not in token.spec.roles:
        refused = "the join token is not a trusted_cluster token"
    elif leaf == auth.cluster:
        refused = "the leaf claims the root's own cluster name"
    if not refused:
        try:
            Metadata(name=leaf)
            _check_cas(body.leaf, f"leaf {leaf!r}")
        except (BadParameter, ValueError) as exc:
            refused = str(exc).splitlines()[0]
    if refused or token is None:
        await auth.audit.emit(
            "remote_cluster.create",
            outcome="failure",
            target=f"remote_cluster/{leaf}",
            remote_addr=remote_addr,
            reason=refused,
        )
        if "token" in refused:
            raise AccessDenied("trusted cluster join token is invalid, expired or already used")
        raise BadParameter(refused)
    remote = RemoteCluster(
        metadata=Metadata(name=leaf),
        spec=RemoteClusterSpec(cas=body.leaf, created_by=f"token/{token.name}"),
    )
    store = remote_store(auth)
    ops: list[Op] = [store.put_op(remote)]
    if token.spec.single_use:
        ops.insert(0, auth.tokens.delete_op(token.name, token.metadata.revision))
    try:
        await auth.audited(
            "remote_cluster.create",
            ops,
            f"cluster/{leaf}",
            f"remote_cluster/{leaf}",
            remote_addr=remote_addr,
            token=token.name,
        )
    except (NotFound, CompareFailed):  # the token was spent concurrently
        raise AccessDenied(
            "trusted cluster join token is invalid, expired or already used"
        ) from None
    return TrustAnswer(root=await cluster_cas(auth))


class RemoteClusters:
    """Root side of ``bctl rm remote_cluster/NAME`` (creates and updates come from leaves)."""

    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth

    async def create(self, resource: Resource, actor: str, *, force: bool) -> Resource:
        raise BadParameter(
            "remote clusters are recorded when a leaf establishes trust: create a "
            "trusted_cluster on the leaf with a token from bctl tokens add --type=trusted_cluster"
        )

    async def update(self, resource: Resource, actor: str) -> Resource:
        return await self.create(resource, actor, force=False)

    async def delete(self, name: str, actor: str) -> None:
        store = remote_store(self._auth)
        await self._auth.audited(
            "remote_cluster.delete", [store.delete_op(name)], actor, f"remote_cluster/{name}"
        )


class TrustService:
    """Leaf side: the ``trusted_cluster`` resource and root users' identities here.

    Args:
        auth: this (leaf) cluster's auth server.
        dialer: reaches a root's proxy; None: trust cannot be established from this process
            (stored trusts still work).
    """

    def __init__(self, auth: AuthServer, dialer: RootDialer | None = None) -> None:
        self._auth = auth
        self._dialer = dialer
        self.store = trusted_store(auth)

    def register(self) -> None:
        """Make ``bctl create/rm`` of trusted and remote clusters go through this service."""
        self._auth.manage("trusted_cluster", self)
        self._auth.manage("remote_cluster", RemoteClusters(self._auth))

    async def create(self, resource: Resource, actor: str, *, force: bool) -> Resource:
        """Establish trust with the root ``resource.name`` (a call to its proxy), then store.

        Raises:
            BadParameter: the name is this cluster's, no token, the root answered with another
                cluster name, or this process cannot reach roots.
            AccessDenied: the root refused the token. ConnectionProblem: unreachable root.
            AlreadyExists: a trust with that root exists (``--force`` re-establishes it).
        """
        assert isinstance(resource, TrustedCluster)
        auth, root = self._auth, resource.name
        if root == auth.cluster:
            raise BadParameter(f"a cluster cannot trust itself ({root!r} is this cluster's name)")
        spec = resource.spec
        if force and not spec.token and await self._exists(root):
            return await self.update(resource, actor)  # settings only; the trust is kept
        if not spec.token:
            raise BadParameter(
                f'trusted_cluster "{root}": spec.token is required: a token from '
                "bctl tokens add --type=trusted_cluster on the root (bctl create --force "
                "without a token changes an existing trust's settings)"
            )
        if not spec.ca_pin:
            raise BadParameter(
                f'trusted_cluster "{root}": spec.ca_pin is required: the root\'s CA pin '
                "(bastion start and bctl status print it there)"
            )
        if not force:
            try:
                await self.store.get(root)
                raise BadParameter(
                    f'trusted_cluster "{root}" already exists: re-establish it with '
                    f"bctl create --force -f FILE (or first bctl rm trusted_cluster/{root})"
                )
            except NotFound:
                pass
        if self._dialer is None:
            raise BadParameter("this auth server cannot reach root clusters (no proxy in process)")
        body = ValidateTrust(token=spec.token, leaf=await cluster_cas(auth))
        answer = await self._dialer.validate(spec.proxy_addr, spec.ca_pin, body)
        if answer.root.cluster != root:
            raise BadParameter(
                f"the cluster at {spec.proxy_addr} is named {answer.root.cluster!r}, not "
                f"{root!r}: name the trusted_cluster after the root cluster"
            )
        _check_cas(answer.root, f"root {root!r}")
        stored = resource.model_copy(deep=True)
        stored.spec.token = ""
        stored.spec.status = TrustedClusterStatus(
            root_cas=answer.root, established=auth.clock.now()
        )
        stored.metadata.revision = ""
        done = await auth.audited(
            "trusted_cluster.create",
            [self.store.put_op(stored)],
            actor,
            f"trusted_cluster/{root}",
            enabled=spec.enabled,
            proxy_addr=spec.proxy_addr,
            role_map=[m.model_dump() for m in spec.role_map],
        )
        return self.store.written(stored, done.items[0])

    async def _exists(self, name: str) -> bool:
        try:
            await self.store.get(name)
        except NotFound:
            return False
        return True

    async def update(self, resource: Resource, actor: str) -> Resource:
        """Change ``enabled``, ``role_map`` or ``proxy_addr``; the root's CAs stay as stored."""
        assert isinstance(resource, TrustedCluster)
        wanted = resource.spec

        async def change(current: TrustedCluster) -> tuple[TrustedCluster, list[Op]]:
            updated = current.model_copy(deep=True)
            updated.spec.enabled = wanted.enabled
            updated.spec.role_map = list(wanted.role_map)
            updated.spec.proxy_addr = wanted.proxy_addr
            if resource.metadata.revision:
                updated.metadata.revision = resource.metadata.revision
            return updated, []

        result, _ = await self._auth.audited_modify(
            self.store,
            resource.name,
            change,
            "trusted_cluster.update",
            actor,
            f"trusted_cluster/{resource.name}",
            enabled=wanted.enabled,
            role_map=[m.model_dump() for m in wanted.role_map],
        )
        return result

    async def delete(self, name: str, actor: str) -> None:
        """Remove the trust and with it the root's CAs (root users are refused at once)."""
        await self._auth.audited(
            "trusted_cluster.delete",
            [self.store.delete_op(name)],
            actor,
            f"trusted_cluster/{name}",
        )

    async def remote_identity(self, cert_der: bytes) -> Identity:
        """The leaf identity of a root user presenting ``cert_der`` (root-signed X.509).

        Raises:
            AccessDenied: no enabled trust whose root user CA signed it (for an identity of
                that root), not a user, or no role of the user maps to a role of this cluster.
        """
        auth = self._auth
        cert = x509.load_der_x509_certificate(cert_der)
        now = auth.clock.now()
        root_identity: Identity | None = None
        trust: TrustedCluster | None = None
        for candidate in await self.store.list():
            cas = candidate.spec.status.root_cas
            if cas is None or candidate.name == auth.cluster:
                continue
            anchors = x509.load_pem_x509_certificates(cas.tls_user_ca.encode())
            try:
                found = verify_certificate_chain(
                    cert, anchors, now, usage=ExtendedKeyUsageOID.CLIENT_AUTH
                )
            except AccessDenied:
                continue
            if found.cluster != candidate.name or found.origin_cluster:
                continue  # a root CA vouches for its own cluster's identities only
            root_identity, trust = found, candidate
            break
        if root_identity is None or trust is None:
            raise AccessDenied("the certificate is not from a trusted root cluster")
        if not trust.spec.enabled:
            raise AccessDenied(f"the trust with cluster {trust.name!r} is suspended")
        if root_identity.kind not in ("user", "bot"):
            raise AccessDenied(f"a {root_identity.kind} identity of a root cluster has no access")
        mapped = map_roles(trust.spec.role_map, root_identity.roles)
        roles: list[Role] = await auth.roles.list()
        known = {r.name: r for r in roles}
        granted = [name for name in mapped if name in known]
        if not granted:
            raise AccessDenied(
                f"no role of {root_identity.user!r} ({', '.join(root_identity.roles)}) maps to "
                f"a role of cluster {auth.cluster!r}"
            )
        role_set = RoleSet.from_roles([known[n] for n in granted], root_identity.traits)
        expires: datetime = min(root_identity.expires, now + role_set.max_session_ttl())
        logins = tuple(role_set.allowed_logins())
        # What the root attested at issuance, re-checked here by the leaf's own policy
        # (require_session_mfa, device_trust_mode): an ordinary root certificate carries no
        # MFA, so a leaf role requiring per-session MFA refuses it; a root per-session
        # certificate counts only when scoped to exactly this leaf, node and login.
        mfa: dict[str, Any] = {
            "logins": logins,
            **leaf_session_mfa(root_identity, auth.cluster, logins),
        }
        return Identity(
            cluster=auth.cluster,
            user=remote_user_name(trust.name, root_identity.user),
            kind="user",
            roles=tuple(granted),
            traits=dict(root_identity.traits),
            expires=expires,
            origin_cluster=trust.name,
            **mfa,
            device_id=root_identity.device_id,
            device_attestation=root_identity.device_attestation,
            device_asset_tag=root_identity.device_asset_tag,
            device_credential_id=root_identity.device_credential_id,
            # the root's word that this certificate's key is TPM-held (its issuer writes
            # ``tpm`` only when the device's AK certified the X.509 and the SSH key alike)
            key_attestation=root_identity.key_attestation,
        )

    async def issue_remote(
        self, identity: Identity, cert_der: bytes, remote_addr: str
    ) -> UserCerts:
        """Leaf certificates for a mapped root user, over the key of its root certificate (only
        its holder can use them); audited as ``cert.issued``.

        The device ceremony of a leaf certificate is the root's: the leaf takes the device and
        ``key_attestation: tpm`` from the verified root certificate (:meth:`remote_identity`),
        so under the leaf's ``require_hardware_key`` the root certificate's key counts as
        TPM-held exactly when the root attested it so."""
        cert = x509.load_der_x509_certificate(cert_der)
        public = cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        attestation = None
        if identity.key_attestation == "tpm" and identity.device_id:
            attestation = KeyAttestation(
                device_id=identity.device_id,
                device_attestation="tpm",
                certified_key_sha256=spki_sha256(public.decode()),
            )
        return await self._auth.issuer.issue_user(
            identity, public.decode(), remote_addr, key_attestation=attestation
        )

    async def own_cas(self) -> ClusterCAs:
        """Root side: this cluster's CAs as pushed to its leaves (every trusted key)."""
        return await cluster_cas(self._auth)

    async def update_root_cas(self, root: str, cas: ClusterCAs) -> bool:
        """Leaf side: the root's current CAs, pushed by the root through the tunnel this leaf
        opened to it (authenticated with the root's host CA stored here), so every phase of a
        CA rotation on the root reaches the leaf. Audited as ``trusted_cluster.update``.
        Returns whether anything changed.

        Raises:
            AccessDenied: the CAs name another cluster. BadParameter: they do not load.
            NotFound: no trust with ``root``.
        """
        if cas.cluster != root:
            raise AccessDenied(f"root {root!r} sent the CAs of {cas.cluster!r}")
        _check_cas(cas, f"root {root!r}")
        if (await self.store.get(root)).spec.status.root_cas == cas:
            return False

        async def change(current: TrustedCluster) -> tuple[TrustedCluster, list[Op]]:
            updated = current.model_copy(deep=True)
            updated.spec.status.root_cas = cas
            return updated, []

        await self._auth.audited_modify(
            self.store,
            root,
            change,
            "trusted_cluster.update",
            f"cluster/{root}",
            f"trusted_cluster/{root}",
            reason="the root's CAs changed (CA rotation)",
        )
        return True

    async def update_leaf_cas(self, leaf: str, cas: ClusterCAs) -> bool:
        """Root side: the leaf's current CAs, pushed by the leaf through its tunnel (accepted
        only with a host certificate that a CA recorded for that leaf signed for that leaf), so
        every phase of a CA rotation on the leaf reaches this root and the leaf's tunnel keeps
        being accepted. They stay trusted for that leaf's tunnel only. Audited as
        ``remote_cluster.update`` (actor ``cluster/LEAF``). Returns whether anything changed.

        Raises:
            AccessDenied: the CAs name another cluster. BadParameter: they do not load.
            NotFound: no remote cluster ``leaf``.
        """
        if cas.cluster != leaf:
            raise AccessDenied(f"leaf {leaf!r} sent the CAs of {cas.cluster!r}")
        _check_cas(cas, f"leaf {leaf!r}")
        store = remote_store(self._auth)
        if (await store.get(leaf)).spec.cas == cas:
            return False

        async def change(current: RemoteCluster) -> tuple[RemoteCluster, list[Op]]:
            updated = current.model_copy(deep=True)
            updated.spec.cas = cas
            return updated, []

        await self._auth.audited_modify(
            store,
            leaf,
            change,
            "remote_cluster.update",
            f"cluster/{leaf}",
            f"remote_cluster/{leaf}",
            reason="the leaf's CAs changed (CA rotation)",
        )
        return True

    async def tunnel_signing_key(self) -> str:
        """Leaf side: the id of the host TLS CA key that signs now (it changes in the ``update``
        phase of a rotation: then :meth:`tunnel_certificate` is asked for a new one)."""
        ca = await self._auth.issuer.ca("tls_host")
        return ca.spec.active_keys[0].id if ca.spec.active_keys else ""

    async def tunnel_certificate(self, ttl: timedelta = TUNNEL_CERT_TTL) -> tuple[str, str]:
        """Leaf side: ``(certificate PEM, key PEM)`` for this proxy's tunnels to its roots,
        signed by the current host TLS CA key (a new ECDSA P-256 key; audited ``cert.issued``),
        so that a tunnel opened after the leaf's rotation completed (``standby``: the old key
        is dropped, also at the root) is still accepted."""
        auth = self._auth
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        identity = Identity(
            cluster=auth.cluster,
            user="proxy",
            kind="host",
            roles=("proxy",),
            host_id="proxy",
            expires=auth.clock.now() + ttl,
        )
        certs = await auth.issuer.issue_host(
            identity, public.decode(), ["proxy"], [], [], ttl, "local"
        )
        return certs.tls_cert, key_pem

    async def proxies(self) -> list[ProxyServer]:
        """Root side: the advertised proxies (heartbeats); those that take leaf tunnels are
        pushed to the leaves (:mod:`bastion.proxy.cluster_route`)."""
        return await self._auth.proxies.list()

    async def trusted(self) -> list[TrustedCluster]:
        return await self.store.list()

    async def remotes(self) -> list[RemoteCluster]:
        return await remote_store(self._auth).list()

    async def record_tunnel(
        self,
        leaf: str,
        connection: Literal["online", "offline", "suspended"] | None,
        seen: datetime | None,
        cas: ClusterCAs | None,
    ) -> bool:
        """Root side, for a proxy in its own process (``POST /v1/trust/tunnel``,
        :class:`~bastion.proxy.cluster_route.CacheTrust`): a leaf tunnel's status and last
        heartbeat (:meth:`heartbeat_remote`, never later than now here) and the CAs the leaf
        pushed through it (:meth:`update_leaf_cas`: the same checks, audited). ``offline`` does
        not replace ``online`` with a heartbeat younger than :data:`REMOTE_ONLINE_GRACE` (the
        leaf keeps a tunnel to each root proxy: one not holding it yet must not flap the
        status). Returns whether the CAs changed.

        Raises:
            NotFound: no remote cluster ``leaf``. AccessDenied / BadParameter: as
            :meth:`update_leaf_cas`.
        """
        current = (await remote_store(self._auth).get(leaf)).spec
        changed = await self.update_leaf_cas(leaf, cas) if cas is not None else False
        now = self._auth.clock.now()
        fresh = current.last_heartbeat is not None and (
            now - current.last_heartbeat < REMOTE_ONLINE_GRACE
        )
        if connection == "offline" and current.connection == "online" and fresh:
            return changed  # another root proxy holds a tunnel of that leaf (it writes online)
        if connection is not None:
            await self.heartbeat_remote(leaf, connection, min(seen, now) if seen else None)
        return changed

    async def heartbeat_remote(
        self,
        name: str,
        connection: Literal["online", "offline", "suspended"],
        seen: datetime | None,
    ) -> None:
        """Root side: record a leaf tunnel's status and last heartbeat (``bctl get
        remote_clusters``). Like node heartbeats, not an audited change; conditional on the
        record's revision, so a concurrent ``bctl rm remote_cluster/NAME`` is never undone."""
        store = remote_store(self._auth)

        def change(current: RemoteCluster) -> RemoteCluster:
            updated = current.model_copy(deep=True)
            updated.spec.connection = connection
            updated.spec.last_heartbeat = seen or current.spec.last_heartbeat
            return updated

        try:
            await store.modify(name, change)
        except (NotFound, CompareFailed):
            pass


def describe(trust: TrustedCluster) -> dict[str, Any]:
    """A short status line's fields (for logs)."""
    return {"root": trust.name, "enabled": trust.spec.enabled, "proxy": trust.spec.proxy_addr}
