"""The ``bastion-ssh/1`` route: authorize one SSH target, then relay raw SSH bytes to it.

Layer: ``proxy`` (IO shell around pure decisions). The listener has terminated TLS and verified
the user's certificate (user TLS CA); this module then speaks the tiny route protocol of
:mod:`bastion.protocols.sshroute` (one JSON request line, one JSON reply line, then raw SSH).

The node may be named by its name, ``name.CLUSTER`` or its host id. Authorization is RBAC over the
node's labels (static and dynamic) *and* the login must be among the certificate's logins (a
certificate narrows what the roles allow; ARCHITECTURE.md 6.2). A node the user may not see gets
exactly the answer of a node that does not exist. The reason of every refusal goes to audit
(``proxy.ssh``, outcome failure), never to the client, except a lock's message and the per-session
MFA refusal, which tell the user what to do (:mod:`bastion.rbac.session_mfa`: where the roles or
the cluster require per-session MFA only a 1-minute certificate scoped to this node and login is
accepted, and such a certificate is refused for any other target).

Targets: through the agent's reverse tunnel when the node has one (``TunnelServer.dial``), else a
direct TCP connection to ``node.spec.addr`` (an agentless OpenSSH ``sshd``). Each relayed
connection is registered in the LiveRegistry (kind ``ssh``) so a lock can end it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bastion.audit.emitter import Emitter
from bastion.auth.gate import IdentityGate, Refusal
from bastion.clock import Clock, in_zone
from bastion.errors import AccessDenied, BadParameter, BastionError, ConnectionProblem, NotFound
from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.locks.matcher import Locked, effective_mode, identity_targets
from bastion.locks.watcher import LockWatcher
from bastion.protocols.sshroute import (
    MAX_REQUEST_LINE,
    SSHRequest,
    encode_reply,
    find_node,
    parse_request,
)
from bastion.proxy.db_moderation import DB_SESSIONS_HOST, DbModerationHub
from bastion.proxy.join_route import join_header, join_target
from bastion.proxy.relay import Relay
from bastion.rbac.checker import RoleSet
from bastion.rbac.conditions import AccessContext
from bastion.rbac.session_mfa import SessionMFARefused, check_session_mfa
from bastion.runtime import as_transport
from bastion.tunnel.server import TunnelServer
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.inventory import Node

__all__ = ["NodeDirectory", "NodePinner", "RoleSource", "SSHRoute", "SSHRouteDeps"]

log = logging.getLogger(__name__)


class NodeDirectory(Protocol):
    async def list_nodes(self) -> list[Node]:
        """Every registered node (the caller filters by RBAC)."""
        ...


class RoleSource(Protocol):
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        """Current definitions of the named roles; unknown names are skipped."""
        ...


class NodePinner(Protocol):
    async def pin(self, name: str, host_id: str) -> str:
        """Pin ``name`` to ``host_id`` unless pinned already; returns the pinned host id
        (:class:`bastion.services.node_pins.NodePins`, or its API in a standalone proxy)."""
        ...


@dataclass(frozen=True, slots=True)
class SSHRouteDeps:
    nodes: NodeDirectory
    roles: RoleSource
    tunnel: TunnelServer
    audit: Emitter
    registry: LiveRegistry
    clock: Clock
    cluster: str
    request_timeout: float = 10.0
    """Seconds for the client to send its request line."""
    connect_timeout: float = 10.0
    """Seconds to look up the node and connect to it."""
    idle_timeout: float | None = None
    """Close relays idle this long (None: never; roles' client_idle_timeout comes later)."""
    locks: LockWatcher | None = None
    """Lock state checked before dialing (None: locks are not checked, tests only)."""
    pins: NodePinner | None = None
    """Which host serves each node name (:mod:`bastion.services.node_pins`): a node whose host
    id changed is refused until an admin confirms it; None in tests of the route alone."""
    gate: IdentityGate | None = None
    """The authentication gate (user still exists, current epoch, locks on the identity, the
    login and the node); None in tests of the route alone."""
    clusters: ClusterForwarder | None = None
    """Request lines naming a leaf cluster go there (:mod:`bastion.proxy.cluster_route`)."""
    db_sessions: DbModerationHub | None = None
    """Joins of moderated database sessions are served here (:mod:`bastion.proxy.db_moderation`)."""


class ClusterForwarder(Protocol):
    def wants(self, line: bytes) -> bool: ...

    async def forward(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        client_addr: tuple[str, int],
        line: bytes,
        rest: bytes,
    ) -> None: ...


class _RequestReader(asyncio.Protocol):
    """Collects the request line; bytes after the newline belong to the SSH stream."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.done: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.buffer += data  # read after the line (pipelined SSH banner): kept
            return
        self.buffer += data
        end = self.buffer.find(b"\n", 0, MAX_REQUEST_LINE)
        if end >= 0:
            self.done.set_result((bytes(self.buffer[:end]), bytes(self.buffer[end + 1 :])))
            self.buffer.clear()
            if self.transport is not None:
                self.transport.pause_reading()  # the rest waits for the relay (bounded)
        elif len(self.buffer) >= MAX_REQUEST_LINE:
            self.done.set_exception(BadParameter("request line longer than 4 KiB"))

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_exception(BadParameter("connection closed before the request line"))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("client went away"))


class SSHRoute:
    """Serves ``bastion-ssh/1`` connections handed over by the listener."""

    def __init__(self, deps: SSHRouteDeps) -> None:
        self._deps = deps

    async def handle(
        self,
        transport: asyncio.Transport,
        identity: Identity,
        client_addr: tuple[str, int],
        early: bytes = b"",
    ) -> None:
        """Serve one authenticated client connection until its relay ends.

        Args:
            transport: the client's TLS transport (after the handshake).
            identity: the verified user identity from the client certificate.
            client_addr: the real client address (from a trusted PROXY header when present).
            early: application bytes already read after the handshake.
        """
        deps = self._deps
        remote = f"{client_addr[0]}:{client_addr[1]}"
        reader = _RequestReader()
        transport.set_protocol(reader)
        reader.connection_made(transport)
        if early:
            reader.data_received(early)
        transport.resume_reading()
        request: SSHRequest | None = None
        try:
            async with asyncio.timeout(deps.request_timeout):
                line, rest = await reader.done
            if deps.clusters is not None and deps.clusters.wants(line):
                rest += bytes(reader.buffer)
                await deps.clusters.forward(transport, identity, client_addr, line, rest)
                return
            request = parse_request(line)
            async with asyncio.timeout(deps.connect_timeout):
                node = await self._authorize(identity, request, client_addr)
                relay = Relay(idle_timeout=deps.idle_timeout, name=f"ssh {remote}")
                await self._connect(relay, node, request, identity, remote)
        except (BastionError, OSError, TimeoutError) as exc:
            message, reason = _refusal(exc, request)
            log.info("proxy.ssh refused %s from %s: %s", identity.user, remote, reason)
            await deps.audit.emit(
                "proxy.ssh",
                outcome="failure",
                user=identity.user,
                login=request.login if request else "",
                target=request.node if request else "",
                remote_addr=remote,
                reason=reason,
            )
            _reply(transport, message)
            transport.close()
            return
        except asyncio.CancelledError:
            transport.abort()  # the proxy is shutting down: do not leave the client hanging
            raise
        # The reply goes out before any byte of the node's (the relay holds them until start).
        _reply(transport)
        relay.attach_a(transport, rest + bytes(reader.buffer))
        relay.start()
        await self._run(relay, identity, node, request, remote)

    def _access_context(self, identity: Identity, client_addr: tuple[str, int]) -> AccessContext:
        """The request as role conditions see it: source IP, time in the cluster's zone, MFA."""
        locks = self._deps.locks
        zone = locks.cluster_time_zone if locks is not None else "UTC"
        now: datetime | None
        try:
            now = in_zone(self._deps.clock.now(), zone)
        except ValueError:
            now = None  # time conditions then fail closed
        return AccessContext.for_identity(identity, source_ip=client_addr[0], time=now)

    async def may_require_session_mfa(self, identity: Identity) -> bool:
        """Can a route of ``identity`` need per-session MFA at all here (a role option or the
        cluster's preference)? The plain OpenSSH path to a leaf asks only then, per target
        (:meth:`session_mfa_required`; docs/trusted-clusters.md)."""
        roles = await self._deps.roles.get_roles(identity.roles)
        locks = self._deps.locks
        cluster = locks.cluster_session_mfa if locks is not None else False
        return cluster or RoleSet.from_roles(roles, identity.traits).options().require_session_mfa

    async def session_mfa_required(
        self, identity: Identity, node: str, login: str, client_addr: tuple[str, int]
    ) -> bool:
        """Would the route to ``login@node`` refuse ``identity`` for want of per-session MFA
        (and nothing else found first)? Any other refusal answers False: the route itself then
        reports it."""
        try:
            await self._authorize(identity, SSHRequest(node=node, login=login), client_addr)
        except SessionMFARefused:
            return True
        except BastionError:
            return False
        return False

    async def _authorize(
        self, identity: Identity, request: SSHRequest, client_addr: tuple[str, int]
    ) -> Node:
        deps = self._deps
        if deps.gate is not None:  # before anything about the node is looked at
            gate_says = await deps.gate.refusal(identity, "ssh", login=request.login)
            if gate_says is not None:
                raise _GateRefused(gate_says)
        if request.join:  # session join: the node decides (bastion.proxy.join_route)
            return join_target(await deps.nodes.list_nodes(), request, deps.cluster)
        node = find_node(await deps.nodes.list_nodes(), request.node, deps.cluster)
        not_found = f"node {request.node} not found"
        if node is None:
            raise NotFound(not_found)
        roles = RoleSet.from_roles(
            await deps.roles.get_roles(identity.roles),
            identity.traits,
            identity.allowed_resources,
        )
        name, labels = node.metadata.name, node.all_labels()
        context = self._access_context(identity, client_addr)
        visible = roles.check_node_visible(name, labels, context=context)
        if not visible.allowed:
            # Same answer as a node that does not exist; the real reason goes to audit.
            raise _Hidden(not_found, visible.reason)
        if deps.pins is not None:
            pinned = await deps.pins.pin(name, node.spec.host_id)
            if pinned != node.spec.host_id:
                raise _HostChanged(name, pinned, node.spec.host_id)
        if request.login not in identity.logins:
            raise AccessDenied(f'login "{request.login}" is not in the certificate\'s logins')
        cluster_mfa = deps.locks.cluster_session_mfa if deps.locks is not None else False
        decision = roles.check_node_access(
            name, labels, request.login, cluster_requires_mfa=cluster_mfa, context=context
        )
        if not decision.allowed:
            raise AccessDenied(decision.reason)
        refused = check_session_mfa(
            identity,
            node_names=(name, node.spec.host_id),
            login=request.login,
            required=decision.mfa_required,
        )
        if refused is not None:
            raise refused
        if deps.locks is not None:
            targets = identity_targets(
                identity, login=request.login, nodes=(name, node.spec.host_id)
            )
            mode = effective_mode(roles.options().lock_mode, deps.locks.cluster_mode)
            deps.locks.check(targets, mode).raise_if_denied()
        return node

    async def _connect(
        self, relay: Relay, node: Node, request: SSHRequest, identity: Identity, remote: str
    ) -> None:
        deps = self._deps
        host_id = node.spec.host_id
        if request.join and host_id == DB_SESSIONS_HOST and deps.db_sessions is not None:
            deps.db_sessions.connect(join_header(identity, request, remote), lambda: relay.b)
            return
        if host_id and deps.tunnel.is_online(host_id):
            header: dict[str, Any] = {
                "type": "ssh",
                "client_addr": remote,
                "user": identity.user,
                "login": request.login,
            }
            if request.join:
                header = join_header(identity, request, remote)
            await deps.tunnel.dial(host_id, header, lambda: relay.b)
            return
        if request.join:
            raise ConnectionProblem(f"node {node.metadata.name} has no joinable sessions")
        if not node.spec.addr:
            raise ConnectionProblem(f"node {node.metadata.name} is offline")
        host, port = _split_addr(node.spec.addr, request.port)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: relay.b, host, port)
        except OSError as exc:
            raise ConnectionProblem(
                f"cannot connect to node {node.metadata.name} at {host}:{port}: {exc.strerror}"
            ) from exc

    async def _run(
        self, relay: Relay, identity: Identity, node: Node, request: SSHRequest, remote: str
    ) -> None:
        deps = self._deps

        async def terminate(reason: str) -> None:
            relay.terminate(reason)

        live = deps.registry.add(
            LiveConnection(
                kind="ssh",
                identity=identity,
                target=node.metadata.name,
                login=request.login,
                remote_addr=remote,
                started=deps.clock.now(),
                terminate=terminate,
                extra={"host_id": node.spec.host_id},
            )
        )
        try:
            await deps.audit.emit(
                "proxy.ssh",
                user=identity.user,
                login=request.login,
                target=node.metadata.name,
                remote_addr=remote,
                reason="",
            )
            await relay.wait_closed()
        finally:
            deps.registry.remove(live)
            log.info(
                "proxy.ssh ended %s@%s for %s: up %d, down %d bytes %s",
                request.login,
                node.metadata.name,
                identity.user,
                relay.bytes_a_to_b,
                relay.bytes_b_to_a,
                relay.reason,
            )
            relay.terminate(relay.reason or "route finished")


class _Hidden(NotFound):
    """A node that exists but is invisible to the user: the client sees NotFound."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _HostChanged(AccessDenied):
    """The node's name is now served by another host than the one pinned: told to the user
    (like OpenSSH's changed host key warning), with the fix."""

    def __init__(self, name: str, pinned: str, current: str) -> None:
        super().__init__(
            f"node {name} is now served by another host than before; it is refused until an "
            f"admin confirms the new host (bctl nodes confirm {name})"
        )
        self.reason = f"host id of node {name} changed from {pinned!r} to {current!r}"


class _GateRefused(AccessDenied):
    """The authentication gate refused the identity: its error for the client, its reason for
    audit."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.error.message)
        self.refusal = refusal


def _refusal(exc: BaseException, request: SSHRequest | None) -> tuple[str, str]:
    """(message for the client, reason for audit)."""
    if isinstance(exc, _GateRefused):
        return exc.refusal.error.message, exc.refusal.reason
    if isinstance(exc, _HostChanged):
        return exc.message, exc.reason
    if isinstance(exc, _Hidden):
        return exc.message, f"node not visible: {exc.reason}"
    if isinstance(exc, Locked | SessionMFARefused):
        return exc.message, exc.reason  # the lock message (and the MFA fix) is meant for the user
    if isinstance(exc, AccessDenied):
        target = f"{request.login}@{request.node}" if request else "the node"
        return f"access denied to {target}", exc.message
    if isinstance(exc, TimeoutError):
        return "timed out", "timed out waiting for the request or the node"
    if isinstance(exc, BastionError):
        return exc.message, exc.message
    return "connection failed", f"{type(exc).__name__}: {exc}"


def _reply(transport: asyncio.Transport, error: str | None = None) -> None:
    if not transport.is_closing():
        transport.write(encode_reply(error))


def _split_addr(addr: str, default_port: int) -> tuple[str, int]:
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return addr, default_port
