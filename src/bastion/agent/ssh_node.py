"""The SSH node service: an asyncssh server that trusts only the cluster's user certificates.

Layer: agent IO shell. Connections arrive two ways and end up in the same asyncssh server:

* :meth:`SSHNode.accept` takes an already-connected :class:`asyncio.Transport` (one per SSH
  connection from the proxy's reverse tunnel). It uses asyncssh's public ``listen(tunnel=...)``
  hook (STYLE.md design constraint 2) instead of a socketpair: asyncssh asks our tunnel object
  to ``create_server(session_factory, host, port)`` and we keep the ``session_factory``; each
  call returns a fresh ``SSHServerConnection`` (an asyncio Protocol) with every server option
  applied, which we attach to the transport (``set_protocol`` + ``connection_made``). No extra
  copy, and the real client address comes from the transport's ``peername``.
* :meth:`SSHNode.listen` is an ordinary TCP listener (default port 3022) for direct access.

Authentication accepts only OpenSSH user certificates from ``config.user_ca_keys`` (asyncssh's
``cert-authority`` check) that also pass :func:`~bastion.agent.ssh_auth.authorize_certificate`
(our identity extension, cluster and RBAC against this node's labels). Every refusal is audited
as ``session.rejected``. Sessions are :class:`~bastion.agent.ssh_session.NodeSession`; port
forwards are :mod:`.ssh_forward`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncssh
import structlog

from bastion.agent.deps import NodeDeps
from bastion.agent.session_join import SessionHub
from bastion.agent.ssh_auth import Authorized, authorize_certificate, install_certificate_hook
from bastion.agent.ssh_forward import ForwardSession, open_direct_tcpip
from bastion.agent.ssh_session import NodeSession, ObserverFactory, SessionContext
from bastion.ca.keys import load_public_key
from bastion.ca.sshcert import parse_ssh_certificate
from bastion.errors import AccessDenied
from bastion.live.registry import LiveConnection
from bastion.locks.matcher import Locked, effective_mode, identity_targets
from bastion.rbac.session_mfa import SessionMFARefused
from bastion.tasks import TaskSet

__all__ = ["DEFAULT_PORT", "LOGIN_TIMEOUT", "SSHNode"]

log = structlog.get_logger(__name__)

DEFAULT_PORT = 3022
LOGIN_TIMEOUT = 30.0
"""Seconds a connection may take to authenticate (bounded pre-auth state, principle 5)."""
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _addr(host: object, port: object) -> str:
    host = str(host or "")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _TransportListener:
    """What asyncssh's ``listen(tunnel=...)`` expects back from ``create_server``.

    asyncssh wraps it in an ``SSHAcceptor`` and calls ``close``, ``wait_closed``, ``get_port``
    and (through ``get_addresses``) nothing else.
    """

    def __init__(self, session_factory: Callable[[str, int], Any]) -> None:
        self.session_factory = session_factory
        self._closed = asyncio.Event()

    def close(self) -> None:
        self._closed.set()

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def get_port(self) -> int:
        return 0

    def get_addresses(self) -> list[tuple[str, int]]:
        return []


class _TransportTunnel:
    """The ``tunnel`` object given to ``asyncssh.listen``: hands us its connection factory."""

    def __init__(self) -> None:
        self.listener: _TransportListener | None = None

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> _TransportListener:
        self.listener = _TransportListener(session_factory)
        return self.listener


class _NodeServer(asyncssh.SSHServer):
    """Per-connection asyncssh callbacks: certificate checks, sessions, forwards."""

    def __init__(self, node: SSHNode, fallback_addr: str) -> None:
        self._node = node
        self._deps = node.deps
        self._fallback_addr = fallback_addr
        self._conn: asyncssh.SSHServerConnection | None = None
        self._ctx: SessionContext | None = None
        self._authorized: Authorized | None = None
        self._forwards: dict[int, LiveConnection] = {}
        self._listeners: list[tuple[LiveConnection, asyncssh.SSHListener]] = []
        self.remote_addr = fallback_addr
        self.remote_ip: str | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self.remote_ip, self.remote_addr = str(peer[0]), _addr(peer[0], peer[1])
        elif self._fallback_addr:
            self.remote_ip = self._fallback_addr.rsplit(":", 1)[0].strip("[]")
        install_certificate_hook(conn, self._check_certificate)

    def connection_lost(self, exc: Exception | None) -> None:
        for entry in list(self._forwards.values()):
            self._deps.registry.remove(entry)
        self._forwards.clear()
        for _, listener in self._listeners:
            listener.close()
        self._listeners.clear()

    # -- authentication ------------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate; there is no anonymous access

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # plain keys never log in; only certificates (through the CA check)

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # reached only for CAs not in authorized_client_keys

    async def _check_certificate(self, login: str, blob: bytes) -> Authorized | None:
        config, locks = self._deps.config, self._deps.locks
        try:
            authorized = await authorize_certificate(
                blob,
                login,
                cluster=config.cluster,
                node_name=config.name,
                node_labels=self._node.labels(),
                user_ca_keys=self._node.user_ca_keys,
                roles=self._deps.roles,
                now=self._deps.clock.now(),
                client_address=self.remote_ip,
                host_id=config.host_id,
                cluster_session_mfa=locks.cluster_session_mfa if locks is not None else False,
                time_zone=locks.cluster_time_zone if locks is not None else "UTC",
                cluster_device_mode=locks.cluster_device_mode if locks is not None else "off",
            )
            self._check_locks(authorized)
        except AccessDenied as exc:
            if isinstance(exc, Locked | SessionMFARefused) and self._conn is not None:
                self._conn.send_auth_banner(f"bastion: {exc.message}\r\n")
            await self._deps.audit.emit(
                "session.rejected",
                outcome="failure",
                user=_user_of(blob),
                login=login,
                target=config.name,
                remote_addr=self.remote_addr,
                reason=exc.reason if isinstance(exc, Locked | SessionMFARefused) else str(exc),
            )
            return None
        self._authorized = authorized
        return authorized

    def _check_locks(self, authorized: Authorized) -> None:
        """Raises: Locked when a lock covers this access (or strict mode and unknown state)."""
        locks, config = self._deps.locks, self._deps.config
        if locks is None:
            return
        targets = identity_targets(
            authorized.identity, login=authorized.login, nodes=(config.name, config.host_id)
        )
        mode = effective_mode(authorized.roles.options().lock_mode, locks.cluster_mode)
        locks.check(targets, mode).raise_if_denied()

    def auth_completed(self) -> None:
        assert self._conn is not None and self._authorized is not None
        self._ctx = SessionContext(
            deps=self._deps,
            conn=self._conn,
            authorized=self._authorized,
            remote_addr=self.remote_addr,
            tasks=self._node.tasks,
            observer_factories=self._node.observer_factories,
            hub=self._node.hub,
        )

    # -- sessions ------------------------------------------------------------------------------

    def session_requested(self) -> NodeSession | bool:
        if self._ctx is None:
            return False
        return NodeSession(self._ctx)

    # -- port forwarding -----------------------------------------------------------------------

    def _forward_allowed(self, addr: str, direction: str) -> bool:
        assert self._ctx is not None
        if self._ctx.authorized.roles.options().port_forwarding:
            return True
        self._node.tasks.spawn(
            self._ctx.audit(
                "port_forward",
                outcome="failure",
                addr=addr,
                direction=direction,
                reason="port forwarding is not allowed by the user's roles",
            ),
            name="audit-forward-refused",
        )
        return False

    def _forward_entry(self, addr: str, direction: str) -> LiveConnection:
        assert self._ctx is not None
        entry = LiveConnection(
            kind="port_forward",
            identity=self._ctx.authorized.identity,
            target=self._deps.config.name,
            login=self._ctx.authorized.login,
            remote_addr=self.remote_addr,
            cert_serial=self._ctx.authorized.cert_serial,
            started=self._deps.clock.now(),
            extra={"addr": addr, "direction": direction},
        )
        self._deps.registry.add(entry)
        self._forwards[entry.id] = entry
        return entry

    def _forward_done(self, entry: LiveConnection) -> None:
        self._forwards.pop(entry.id, None)
        self._deps.registry.remove(entry)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        addr = _addr(dest_host, dest_port)
        if self._ctx is None or not self._forward_allowed(addr, "local"):
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "port forwarding is not permitted"
            )
        return self._open_local_forward(dest_host, dest_port, addr)

    async def _open_local_forward(self, host: str, port: int, addr: str) -> ForwardSession:
        assert self._ctx is not None
        entry = self._forward_entry(addr, "local")
        try:
            session = await open_direct_tcpip(host, port, entry)
        except BaseException:
            self._forward_done(entry)
            raise

        async def terminate(reason: str) -> None:
            session.close()

        entry.terminate = terminate
        session.on_close = lambda s: self._forward_done(s.entry)
        await self._ctx.audit("port_forward", addr=addr, direction="local")
        return session

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        addr = _addr(listen_host, listen_port)
        if self._ctx is None or not self._forward_allowed(addr, "remote"):
            return False
        return self._open_remote_forward(listen_host, listen_port, addr)

    async def _open_remote_forward(
        self, listen_host: str, listen_port: int, addr: str
    ) -> asyncssh.SSHListener:
        assert self._ctx is not None and self._conn is not None
        # Like sshd's default "GatewayPorts no": remote forwards listen on loopback only.
        bind = listen_host if listen_host in _LOOPBACK else "localhost"
        listener = await self._conn.forward_local_port(bind, listen_port, listen_host, listen_port)
        entry = self._forward_entry(addr, "remote")

        async def terminate(reason: str) -> None:
            listener.close()
            self._forward_done(entry)

        entry.terminate = terminate
        self._listeners.append((entry, listener))
        await self._ctx.audit("port_forward", addr=addr, direction="remote")
        return listener


def _user_of(blob: bytes) -> str:
    """The user a refused certificate claims (its key id; unverified), for the audit event."""
    with contextlib.suppress(Exception):
        return parse_ssh_certificate(blob).key_id
    return ""


class SSHNode:
    """The SSH node service.

    Args:
        deps: configuration and collaborators (validated here).
        observers: factories of session observers (recorders, live viewers); see
            :class:`~bastion.agent.session.SessionObserver`.
        dynamic_labels: returns the current results of command labels (from the heartbeat's
            :class:`~bastion.agent.heartbeat.CommandLabelRunner`); RBAC sees static labels
            plus these.

    Raises:
        BadParameter: the host key, host certificate or user CA keys cannot be read.
    """

    def __init__(
        self,
        deps: NodeDeps,
        *,
        observers: Sequence[ObserverFactory] = (),
        dynamic_labels: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.deps = deps
        self.observer_factories = tuple(observers)
        self.tasks = TaskSet()
        self.hub = SessionHub(deps, self.tasks)
        """Live sessions others may join (:mod:`.session_join`)."""
        self._dynamic_labels = dynamic_labels
        config = deps.config
        self.user_ca_keys = [load_public_key(line) for line in config.user_ca_keys]
        self._host_key = asyncssh.import_private_key(config.host_key_pem)
        self._host_cert = asyncssh.import_certificate(config.host_cert)
        self._authorized_keys = asyncssh.import_authorized_keys(
            "".join(f"cert-authority {line.strip()}\n" for line in config.user_ca_keys)
        )
        self._tunnel = _TransportTunnel()
        self._tunnel_acceptor: asyncssh.SSHAcceptor | None = None
        self._acceptors: list[asyncssh.SSHAcceptor] = []
        self._fallback_addr = ""

    def labels(self) -> dict[str, str]:
        """Static labels plus the latest command label results."""
        merged = dict(self.deps.config.labels)
        if self._dynamic_labels is not None:
            merged.update(self._dynamic_labels())
        return merged

    def _server_factory(self) -> _NodeServer:
        return _NodeServer(self, self._fallback_addr)

    def _options(self) -> dict[str, Any]:
        return {
            "server_factory": self._server_factory,
            "server_host_keys": [(self._host_key, self._host_cert)],
            "authorized_client_keys": self._authorized_keys,
            "password_auth": False,
            "kbdint_auth": False,
            "host_based_auth": False,
            "gss_host": None,
            "x11_forwarding": False,
            "agent_forwarding": True,  # narrowed per connection by the role (ssh_auth)
            "allow_scp": False,  # scp runs as an exec of the system scp, as the login user
            "line_editor": False,
            "encoding": None,
            "login_timeout": LOGIN_TIMEOUT,
            "keepalive_interval": 30,
            "server_version": "Bastion",
        }

    async def start(self) -> None:
        """Prepare :meth:`accept` (idempotent)."""
        if self._tunnel_acceptor is None:
            self._tunnel_acceptor = await asyncssh.listen(
                host="", port=0, tunnel=self._tunnel, **self._options()
            )

    async def accept(self, transport: asyncio.Transport, client_addr: tuple[str, int]) -> None:
        """Serve one SSH connection that arrived on an already-connected transport.

        Args:
            transport: the connection (from the reverse tunnel); its protocol is replaced.
            client_addr: the real client address, used when the transport has no
                ``peername``.

        A caller that cannot attach at once should ``pause_reading()`` the transport (or
        queue, as the tunnel's streams do) until then; :meth:`accept` resumes reading, which
        delivers what was held back.
        """
        await self.start()
        listener = self._tunnel.listener
        assert listener is not None
        if listener.is_closed:
            transport.close()
            return
        conn = listener.session_factory("", 0)
        # _server_factory runs inside connection_made, synchronously: it sees this address.
        self._fallback_addr = _addr(*client_addr)
        try:
            transport.set_protocol(conn)
            conn.connection_made(transport)
        finally:
            self._fallback_addr = ""
        # Bytes that arrived before the protocol was attached are held by the transport (a
        # paused socket, the tunnel stream's queue); resuming delivers them. Pause first so
        # that resume_reading is never a no-op.
        if transport.is_reading():
            transport.pause_reading()
        transport.resume_reading()

    async def listen(self, host: str = "", port: int = DEFAULT_PORT) -> int:
        """Also listen for direct TCP connections; returns the bound port (useful with 0)."""
        acceptor = await asyncssh.listen(host, port, **self._options())
        self._acceptors.append(acceptor)
        return int(acceptor.get_port())

    def replace_host_key(
        self, host_key_pem: str, host_cert: str, user_ca_keys: Sequence[str]
    ) -> None:
        """A renewed host key and certificate, and the current user CA keys, for the SSH
        connections accepted from now on (asyncssh's ``SSHAcceptor.update``; connections
        already up keep theirs)."""
        self.user_ca_keys = [load_public_key(line) for line in user_ca_keys]
        self._host_key = asyncssh.import_private_key(host_key_pem)
        self._host_cert = asyncssh.import_certificate(host_cert)
        self._authorized_keys = asyncssh.import_authorized_keys(
            "".join(f"cert-authority {line.strip()}\n" for line in user_ca_keys)
        )
        for acceptor in [*self._acceptors, *filter(None, [self._tunnel_acceptor])]:
            acceptor.update(
                server_host_keys=[(self._host_key, self._host_cert)],
                authorized_client_keys=self._authorized_keys,
            )

    async def close(self) -> None:
        """Stop accepting, end live sessions and stop background work."""
        for acceptor in [*self._acceptors, *filter(None, [self._tunnel_acceptor])]:
            acceptor.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await acceptor.wait_closed()
        self._acceptors.clear()
        self._tunnel_acceptor = None
        self._tunnel = _TransportTunnel()
        for entry in self.deps.registry.find(
            lambda c: (
                c.kind in ("ssh_session", "port_forward") and c.target == self.deps.config.name
            )
        ):
            if entry.terminate is not None:
                await entry.terminate("the node is shutting down")
        await self.tasks.cancel_all()
