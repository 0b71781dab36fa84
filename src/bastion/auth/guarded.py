"""GuardedAuth: the AuthServer surface with every call authorized by the RBAC engine.

Each method first asks :class:`bastion.rbac.checker.RoleSet` (``require(kind, verb)``), audits a
refusal with who, what and why, and then delegates. List endpoints filter per item (a node the
caller may not see is absent, not an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bastion.audit.log import DEDUPE_PREFIX, AuditQuery
from bastion.auth.issuer import HostCerts
from bastion.auth.krl import PublishedKRL, krl_for
from bastion.auth.server import AuthServer, NewToken
from bastion.auth.system_roles import system_roles_for
from bastion.auth.trust import TrustService
from bastion.auth.users import Invite, UserService
from bastion.contract.trust import TunnelReport
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.rbac.checker import RoleSet
from bastion.services.node_pins import NodePins
from bastion.types.access import User
from bastion.types.audit import AGENT_EVENT_TYPES, AuditEvent
from bastion.types.authority import CA_TYPES, CAType, CertAuthority
from bastion.types.connectors import redact
from bastion.types.identity import Identity
from bastion.types.inventory import Node, ProxyServer
from bastion.types.meta import Resource

__all__ = ["AuthContext", "GuardedAuth"]


PROXY_EVENT_TYPES = frozenset(
    {"access.denied", "session.terminated", "remote_cluster.connected"}
    | {f"db.session.{e}" for e in ("start", "query", "end", "cancel")}
)
"""Besides ``proxy.*``: what a proxy in its own process reports (its gate, its lock watcher,
its database route, the leaf clusters' tunnels it takes)."""
AGENT_EVENT_ID = re.compile(r"[0-9a-f]{32}")
AGENT_EVENT_ID_TTL = timedelta(days=3)
"""How long auth remembers an agent's event id (an agent resending later than this after its
first attempt could store the event twice)."""


def _agent_event(event: dict[str, Any], submitter: Identity) -> tuple[str, str, dict[str, Any]]:
    """``(type, outcome, fields)`` of an event an agent submitted.

    A host speaks only for itself: ``proxy.*`` events come from proxies only, and a host that is
    not a proxy reports only events about itself (``target`` is its certificate's node name,
    filled in when absent), so a compromised node cannot plant session records of another node.

    Raises:
        BadParameter: a type agents may not submit, a malformed event id, or an event about
            another host.
    """
    event_type = str(event.get("type", ""))
    if event_type not in AGENT_EVENT_TYPES:
        raise BadParameter(f"agents may not submit events of type {event_type[:100]!r}")
    event_id = event.get("event_id")
    if event_id is not None and not (
        isinstance(event_id, str) and AGENT_EVENT_ID.fullmatch(event_id)
    ):
        raise BadParameter("event_id must be 32 lowercase hex digits")
    fields = {
        k: v
        for k, v in event.items()
        if k not in ("type", "code", "time", "id", "cluster", "fields", "outcome", "event_id")
    }
    raw_extra = event.get("fields")
    extra: dict[str, Any] = raw_extra if isinstance(raw_extra, dict) else {}
    outcome = "failure" if event.get("outcome") == "failure" else "success"
    merged = {**extra, **fields, "emitted_by": submitter.user}
    if submitter.kind == "host":
        _check_host_event(event_type, merged, submitter)
    return event_type, outcome, merged


def _check_host_event(event_type: str, fields: dict[str, Any], host: Identity) -> None:
    """Raises: BadParameter for an event this host may not report (see :func:`_agent_event`)."""
    if "proxy" in host.roles:
        # Proxies report their routes, the gate's refusals and the connections a lock ended.
        proxy_own = event_type.startswith("proxy.") or event_type in PROXY_EVENT_TYPES
        if not proxy_own and "node" not in host.roles:
            raise BadParameter(f"proxies may not submit {event_type!r} events of nodes")
        return
    if event_type.startswith(("proxy.", "db.session.")) or event_type == "access.denied":
        raise BadParameter(f"only proxies may submit {event_type!r} events")
    bound = (host.traits.get("hostname") or ("",))[0]
    target = fields.setdefault("target", bound)
    if not bound or target != bound:
        raise BadParameter(
            f"a host may only submit events about itself ({bound!r}), not {str(target)[:100]!r}"
        )


@dataclass(frozen=True, slots=True)
class AuthContext:
    identity: Identity
    role_set: RoleSet
    remote_addr: str

    @property
    def actor(self) -> str:
        return self.identity.user


class GuardedAuth:
    def __init__(self, auth: AuthServer, users: UserService, ctx: AuthContext) -> None:
        self._auth = auth
        self._users = users
        self.ctx = ctx

    @classmethod
    async def for_identity(
        cls, auth: AuthServer, users: UserService, identity: Identity, remote_addr: str
    ) -> GuardedAuth:
        """Build the context from the certificate's identity and the roles as stored *now*.

        The identity has passed the authentication gate (:mod:`bastion.auth.gate`).
        """
        if identity.kind == "host":
            role_set = RoleSet.from_roles(system_roles_for(identity.roles), {})
            return cls(auth, users, AuthContext(identity, role_set, remote_addr))
        roles = []
        for name in identity.roles:
            try:
                roles.append(await auth.roles.get(name))
            except NotFound:
                continue  # a deleted role grants nothing
        traits = {k: list(v) for k, v in identity.traits.items()}
        role_set = RoleSet.from_roles(roles, traits, identity.allowed_resources)
        return cls(auth, users, AuthContext(identity, role_set, remote_addr))

    async def require(self, kind: str, verb: str) -> None:
        decision = self.ctx.role_set.check_rule(kind, verb)
        if not decision.allowed:
            await self._auth.audit.emit(
                "access.denied",
                outcome="failure",
                user=self.ctx.actor,
                remote_addr=self.ctx.remote_addr,
                target=kind,
                verb=verb,
                reason=decision.reason,
            )
            raise AccessDenied(f"access denied: you may not {verb} {kind}")

    # ---- generic resources ---------------------------------------------------------------------

    async def list_resources(self, kind: str) -> list[Resource]:
        # Nodes: listing follows the rule of reaching them (node_labels, per item), not an
        # admin rule, so a role that may ssh to a node may also see it in bsh ls (as Teleport).
        if kind != "node":
            await self.require(kind, "list")
        # Read-only from here on (shared, cached decodes: 10,000 nodes per bsh ls / web page);
        # the steps below that change an item copy it first.
        items: list[Resource] = await self._auth.store(kind).list_shared()
        if kind == "node":
            items = [n for n in items if isinstance(n, Node) and self._node_visible(n)]
        if kind == "user":
            items = await self._with_sign_up([u for u in items if isinstance(u, User)])
        if kind == "cert_authority":
            items = [ca.without_secrets() for ca in items if isinstance(ca, CertAuthority)]
        return [redact(item) for item in items]

    async def get_resource(self, kind: str, name: str) -> Resource:
        if kind != "node":  # nodes: visible by node_labels, as in list_resources
            await self.require(kind, "read")
        item: Resource = await self._auth.store(kind).get(name)
        if isinstance(item, Node) and not self._node_visible(item):
            raise NotFound(f'node "{name}" not found')
        if isinstance(item, CertAuthority):
            item = item.without_secrets()
        return redact(item)

    async def _with_sign_up(self, users: list[User]) -> list[Resource]:
        """Users with ``status.sign_up`` (and the invite's expiry) filled in for listing."""
        states = await self._users.sign_up_states([u.name for u in users])
        out: list[Resource] = []
        for user in users:
            if user.name in states:
                user = user.model_copy(deep=True)
                user.spec.status.sign_up, user.spec.status.invite_expires = states[user.name]
            out.append(user)
        return out

    def _node_visible(self, node: Node) -> bool:
        # The local admin identity (bctl on the auth host) and proxies manage the inventory;
        # everyone else sees only the nodes their roles' node_labels select.
        if (
            self.ctx.identity.kind == "admin"
            or "proxy" in self.ctx.identity.roles
            and (self.ctx.identity.kind == "host")
        ):
            return True
        return self.ctx.role_set.check_node_visible(node.name, node.all_labels()).allowed

    async def create_resource(self, resource: Resource, force: bool) -> Resource:
        await self.require(resource.kind, "create")
        if force:
            await self.require(resource.kind, "update")
        resource = await self._confine_host(resource)
        return redact(await self._auth.create_resource(resource, self.ctx.actor, force=force))

    async def update_resource(self, resource: Resource, force: bool = False) -> Resource:
        """Updates are conditional on ``metadata.revision`` (the API documents them so); an
        unconditional one (last writer wins) must say so with ``force``."""
        await self.require(resource.kind, "update")
        if not resource.metadata.revision and not force:
            raise BadParameter(
                f'{resource.kind} "{resource.name}": metadata.revision is required for an '
                "update (read the resource and send back its revision), or pass ?force=true "
                "to overwrite whatever is stored"
            )
        resource = await self._confine_host(resource)
        if force:
            resource = resource.model_copy(deep=True)
            resource.metadata.revision = ""
        return redact(await self._auth.update_resource(resource, self.ctx.actor))

    async def delete_resource(self, kind: str, name: str) -> None:
        await self.require(kind, "delete")
        await self._check_host_write(kind, name)
        await self._auth.delete_resource(kind, name, self.ctx.actor)
        if kind == "node":  # an admin removed it: the next host under this name starts afresh
            await NodePins(self._auth.deps.backend).forget(name)

    async def _confine_host(self, resource: Resource) -> Resource:
        """:meth:`_check_host_write`, and a host's node record always names its own host id."""
        await self._check_host_write(resource.kind, resource.name)
        if self.ctx.identity.kind == "host" and isinstance(resource, Node):
            resource = resource.model_copy(deep=True)
            resource.spec.host_id = self.ctx.identity.host_id
        return resource

    async def _check_host_write(self, kind: str, name: str) -> None:
        """A host identity writes only its own node record, bound to its host id, on every
        route (ARCHITECTURE.md 6.1); people are not affected.

        Raises:
            AccessDenied: (audited as ``node.rejected``) another kind, another node's name, or a
                record held by another host.
        """
        ident = self.ctx.identity
        if ident.kind != "host":
            return
        bound = (ident.traits.get("hostname") or ("",))[0]
        reason = ""
        if kind != "node":
            reason = f"hosts may not write {kind} resources"
        elif not bound or name != bound:
            reason = f"host certificate is for node {bound!r}, not {name!r}"
        else:
            try:
                stored: Node | None = await self._auth.nodes.get(name)
            except NotFound:
                stored = None
            if stored is not None and stored.spec.host_id not in ("", ident.host_id):
                reason = f"node {name!r} is held by host {stored.spec.host_id}"
        if not reason:
            return
        await self._auth.audit.emit(
            "node.rejected",
            outcome="failure",
            user=ident.user,
            target=f"{kind}/{name}",
            remote_addr=self.ctx.remote_addr,
            reason=reason,
        )
        raise AccessDenied(f"access denied: {reason}")

    # ---- users and tokens ----------------------------------------------------------------------

    async def add_user(
        self, name: str, roles: list[str], logins: list[str], traits: dict[str, list[str]]
    ) -> Invite:
        await self.require("user", "create")
        return await self._users.add_user(name, roles, logins, traits, self.ctx.actor)

    async def reset_user(self, name: str) -> Invite:
        await self.require("user", "update")
        return await self._users.reset_user(name, self.ctx.actor)

    async def update_user(
        self,
        name: str,
        roles: list[str] | None,
        logins: list[str] | None,
        traits: dict[str, list[str]] | None,
    ) -> User:
        await self.require("user", "update")
        user = await self._auth.users.get(name)
        if roles is not None:
            user.spec.roles = roles
        if traits is not None:
            user.spec.traits = {**user.spec.traits, **traits}
        if logins is not None:
            user.spec.traits["logins"] = logins
        result = await self._auth.update_resource(user, self.ctx.actor)
        assert isinstance(result, User)
        return result

    async def add_token(self, roles: list[str], ttl: timedelta, labels: dict[str, str]) -> NewToken:
        await self.require("token", "create")
        return await self._auth.add_token(roles, ttl, labels, self.ctx.actor)

    # ---- certificate authorities ---------------------------------------------------------------

    @staticmethod
    def _ca_type(value: str) -> CAType:
        aliases = {
            "user": "ssh_user",
            "host": "ssh_host",
            "tls-user": "tls_user",
            "tls-host": "tls_host",
            "tls_user": "tls_user",
            "tls_host": "tls_host",
        }
        wanted = aliases.get(value, value)
        for ca_type in CA_TYPES:
            if ca_type == wanted:
                return ca_type
        raise BadParameter(
            f"unknown CA type {value!r}: use user, host, tls-user, tls-host, db or jwt"
        )

    async def export_ca(self, ca_type: str, fmt: str) -> str:
        await self.require("cert_authority", "read")
        return await self._auth.export_ca(self._ca_type(ca_type), fmt)

    async def krl(self) -> PublishedKRL:
        """The OpenSSH KRL of the current locks (:mod:`bastion.auth.krl`).

        It needs ``read`` on ``lock``, not on ``cert_authority``: the KRL is derived from the
        locks and names locked users, and every host role that enforces locks (node, proxy, db,
        app) can already read them.
        """
        await self.require("lock", "read")
        return await krl_for(self._auth)

    async def rotate_ca(self, ca_type: str, phase: str) -> CertAuthority:
        await self.require("cert_authority", "update")
        return (
            await self._auth.rotate_ca(self._ca_type(ca_type), phase, self.ctx.actor)
        ).without_secrets()

    async def sign_host(
        self, host: str, public_key: str, principals: list[str], ttl: timedelta
    ) -> HostCerts:
        await self.require("cert_authority", "update")
        return await self._auth.sign_host(host, public_key, principals, ttl, self.ctx.actor)

    # ---- agents --------------------------------------------------------------------------------

    async def heartbeat_node(self, node: Node) -> Node:
        """A node agent reports itself; the name must be the one its certificate was issued for."""
        await self.require("node", "update")
        ident = self.ctx.identity
        if ident.kind != "host":
            raise AccessDenied("access denied: heartbeats come from node agents")
        await self._check_host_write("node", node.name)
        stored = await self._auth.heartbeat_node(node, ident.host_id, self.ctx.remote_addr)
        await NodePins(self._auth.deps.backend).pin(node.name, ident.host_id)  # first sight
        return stored

    async def heartbeat_proxy(self, proxy: ProxyServer) -> ProxyServer:
        """A proxy in its own process advertises itself, named by its host id (unique even
        for several proxies on one host)."""
        ident = self.ctx.identity
        if ident.kind != "host" or "proxy" not in ident.roles:
            raise AccessDenied("access denied: proxy heartbeats come from proxies")
        if not ident.host_id or proxy.name != ident.host_id:
            raise AccessDenied(
                f"host certificate is for proxy {ident.host_id!r}, not {proxy.name[:100]!r}"
            )
        return await self._auth.heartbeat_proxy(proxy, ident.host_id)

    async def record_tunnel(self, report: TunnelReport) -> bool:
        """A proxy in its own process records a leaf tunnel it holds (status, last heartbeat,
        the CAs the leaf pushed: :meth:`TrustService.record_tunnel`, which refuses an unknown
        leaf and checks the CAs exactly as for the auth process's own proxy). Proxy host
        certificates only; it reads the remote clusters it reports on."""
        ident = self.ctx.identity
        if ident.kind != "host" or "proxy" not in ident.roles:
            raise AccessDenied("access denied: leaf tunnels are reported by proxies")
        await self.require("remote_cluster", "read")
        return await TrustService(self._auth).record_tunnel(
            report.leaf, report.connection, report.last_heartbeat, report.cas
        )

    async def pin_node(self, name: str, host_id: str) -> str:
        """A proxy pins node ``name`` to ``host_id`` at first sight (see
        :class:`~bastion.services.node_pins.NodePins`); returns the pinned host id."""
        ident = self.ctx.identity
        if ident.kind != "host" or "proxy" not in ident.roles:
            raise AccessDenied("access denied: node pins are kept by proxies")
        return await NodePins(self._auth.deps.backend).pin(name, host_id)

    async def confirm_node(self, name: str) -> dict[str, str]:
        """Accept the host now serving node ``name`` (after a re-join under the same name),
        which the proxy refuses until then. Returns the previous and the new host id."""
        await self.require("node", "update")
        node = await self._auth.nodes.get(name)
        pins = NodePins(self._auth.deps.backend)
        previous = await pins.get(name) or ""
        await pins.confirm(name, node.spec.host_id)
        await self._auth.audit.emit(
            "node.confirm",
            user=self.ctx.actor,
            target=f"node/{name}",
            remote_addr=self.ctx.remote_addr,
            previous_host_id=previous,
            host_id=node.spec.host_id,
        )
        return {"node": name, "previous_host_id": previous, "host_id": node.spec.host_id}

    async def submit_event(self, event: dict[str, Any]) -> None:
        """Record an event from an agent or proxy in another process."""
        await self.require("event", "create")
        event_type, outcome, fields = _agent_event(event, self.ctx.identity)
        await self._auth.audit.emit(event_type, outcome=outcome, **fields)

    async def submit_events(self, events: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Record a batch of events from an agent or proxy in another process, in order.

        Each event may carry ``event_id`` (32 hex digits, made by the agent): an id this caller
        already submitted within :data:`AGENT_EVENT_ID_TTL` is not stored again, so agents can
        resend after a timeout (at-least-once delivery, exactly-once in the log). Returns one
        result per event: ``{"event_id", "status": "stored" | "duplicate" | "rejected",
        "reason"}``; a rejected event (wrong type, malformed) is audited as ``event.rejected``
        and does not stop the others.
        """
        await self.require("event", "create")
        submitter = self.ctx.identity.user
        audit = self._auth.audit
        results: list[dict[str, str]] = []
        specs: list[tuple[str, str, dict[str, Any], str | None]] = []
        slots: list[int] = []
        for event in events:
            event_id = event.get("event_id")
            result = {"event_id": event_id if isinstance(event_id, str) else "", "status": ""}
            results.append(result)
            try:
                event_type, outcome, fields = _agent_event(event, self.ctx.identity)
                audit.check(event_type, outcome, fields)
            except BadParameter as exc:
                result.update(status="rejected", reason=exc.message)
                fields = {
                    "user": submitter,
                    "reason": exc.message,
                    "rejected_type": str(event.get("type", ""))[:100],
                    "event_id": result["event_id"][:64],
                }
                valid_id = AGENT_EVENT_ID.fullmatch(result["event_id"])
                once = f"{DEDUPE_PREFIX}{submitter}/{event_id}" if valid_id else None
                # a resent refused event is refused again, but audited once
                await audit.emit_once(
                    [("event.rejected", "failure", fields, once)], AGENT_EVENT_ID_TTL
                )
                continue
            key = f"{DEDUPE_PREFIX}{submitter}/{event_id}" if event_id else None
            specs.append((event_type, outcome, fields, key))
            slots.append(len(results) - 1)
        if specs:
            stored = await audit.emit_once(specs, AGENT_EVENT_ID_TTL)
            for slot, done in zip(slots, stored, strict=True):
                results[slot]["status"] = "stored" if done is not None else "duplicate"
        return results

    # ---- audit ---------------------------------------------------------------------------------

    async def search_events(self, query: AuditQuery) -> list[AuditEvent]:
        await self.require("event", "list")
        return await self._auth.audit.search(query)

    async def audit_checkpoint(self) -> dict[str, str]:
        """Sign a checkpoint of the audit log now (if it grew) and return the latest one."""
        await self.require("event", "list")
        checkpointer = await self._auth.audit_checkpointer()
        note = await checkpointer.checkpoint()
        return {"checkpoint": note, "verifier_key": checkpointer.signer.verifier_key}

    async def audit_proof(self, index: int | None, event_id: str) -> dict[str, Any]:
        """An inclusion proof for one event (by index or id) against a fresh checkpoint."""
        await self.require("event", "list")
        checkpointer = await self._auth.audit_checkpointer()
        proof = await checkpointer.inclusion(index=index, event_id=event_id)
        return {**proof, "verifier_key": checkpointer.signer.verifier_key}

    def whoami(self) -> dict[str, Any]:
        ident = self.ctx.identity
        return {
            "user": ident.user,
            "kind": ident.kind,
            "roles": list(ident.roles),
            "logins": list(ident.logins),
            "expires": ident.expires.isoformat(),
            "cluster": ident.cluster,
        }
