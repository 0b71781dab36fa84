"""What every agent shares, whatever it serves (SSH nodes, databases, apps).

Layer: ``agent``. An agent runs one of two ways, and the set-up of each is the same for every
kind of agent; only the protocol behind the tunnel differs:

* **in the all-in-one process**: auth issues the agent's host identity directly
  (:func:`local_host_identity`; the host id is kept across restarts in ``DIR/identity.json``)
  and the agent's tunnel is handed to the proxy of the same process in memory
  (:func:`in_process_connector`), with no loopback TLS; it also keeps a tunnel to every proxy
  in its own process that heartbeats to this auth server (:func:`follow_local_proxies`), so
  those reach the all-in-one's agents too;
* **on another host**: it joins once with a token (:func:`joined_identity`), keeps a tunnel to
  every proxy that auth advertises (:func:`follow_proxies`) and renews its host certificate
  (:func:`host_renewer`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bastion.agent.join import HostIdentity, join_cluster, load_host_identity
from bastion.agent.remote import RemoteAuth
from bastion.agent.renewer import HostRenewer, RenewPolicy, remote_renew, swap_remote
from bastion.auth.issuer import HostCerts
from bastion.auth.server import AuthServer
from bastion.auth_service import _new_key_pem
from bastion.clock import Clock
from bastion.config.schema import FileConfig
from bastion.errors import BadParameter, BastionError, NotFound
from bastion.files import write_private_file
from bastion.protocols.addr import parse_addr
from bastion.services.cache import ResourceCache
from bastion.tunnel.client import Connector, client_tls_context
from bastion.tunnel.memory import memory_pair
from bastion.tunnel.pool import TunnelPool
from bastion.tunnel.session import MuxSession
from bastion.types.identity import Identity
from bastion.types.inventory import ProxyServer
from bastion.types.meta import Resource

__all__ = [
    "LOCAL_HOST_CERT_TTL",
    "LocalHost",
    "follow_local_proxies",
    "follow_proxies",
    "in_process_bootstrap",
    "heartbeat_round",
    "host_renewer",
    "in_process_connector",
    "joined_identity",
    "local_host_identity",
    "stored_host_id",
]

log = structlog.get_logger("bastion.agent")
LOCAL_PROXY_POLL = timedelta(seconds=5)
R = TypeVar("R", bound=Resource)

LOCAL_HOST_CERT_TTL = timedelta(days=30)
"""Host certificates of in-process agents: they never leave the process, and the process
issues new ones at each start."""


class LocalHost:
    """An in-process agent's host identity: the certificates auth issued and their key."""

    def __init__(self, identity: Identity, certs: HostCerts, key_pem: bytes) -> None:
        self.identity = identity
        self.certs = certs
        self.key_pem = key_pem

    @property
    def tls(self) -> tuple[str, str, str]:
        """``(certificate, key, host CA)`` PEM for the agent's tunnel TLS context."""
        return (self.certs.tls_cert, self.key_pem.decode(), self.certs.tls_host_ca)


def stored_host_id(directory: Path, name: str) -> str:
    """The host id an agent of this name kept in ``directory`` (empty when none or another
    name's): an in-process agent keeps its id, and so its records, across restarts."""
    try:
        ident: HostIdentity | None = load_host_identity(directory)
    except (NotFound, KeyError, ValueError):
        ident = None
    return ident.host_id if ident is not None and ident.host_name == name else ""


async def local_host_identity(
    server: AuthServer,
    directory: Path,
    name: str,
    role: str,
    clock: Clock,
    *,
    principals: list[str] | None = None,
    host_id: str = "",
    ttl: timedelta = LOCAL_HOST_CERT_TTL,
) -> LocalHost:
    """Have auth issue an in-process agent's host identity (role ``role``) directly, and
    record its host id in ``directory/identity.json`` (also to renew it: a new key each time,
    :class:`~bastion.agent.renewer.LocalRenewer`)."""
    host_id = host_id or stored_host_id(directory, name) or str(uuid.uuid4())
    key_pem, pub = _new_key_pem()
    identity = Identity(
        cluster=server.cluster,
        user=host_id,
        kind="host",
        roles=(role,),
        host_id=host_id,
        traits={"hostname": (name,)},
        expires=clock.now() + ttl,
    )
    certs = await server.issuer.issue_host(
        identity, pub, principals or [host_id, name], [name], [], ttl, "local"
    )
    write_private_file(
        directory / "identity.json",
        json.dumps(
            {
                "host_id": host_id,
                "host_name": name,
                "role": role,
                "cluster": server.cluster,
                "server": "local",
                "expires": identity.expires.isoformat(),
            }
        ),
    )
    return LocalHost(identity, certs, key_pem)


def in_process_connector(proxy: Any, identity: Identity, label: str) -> Connector:
    """Hand the agent's tunnel to the proxy of this process in memory (``proxy`` is the
    running ProxyService): no loopback TLS, everything above the transport unchanged."""

    async def connect(new_session: Callable[[], MuxSession]) -> MuxSession:
        agent_end, proxy_end = memory_pair(label)
        session = new_session()
        agent_end.set_protocol(session)
        session.connection_made(agent_end)
        proxy.tunnel.accept(proxy_end, identity)
        return session

    return connect


async def joined_identity(
    config: FileConfig,
    directory: Path,
    *,
    name: str,
    role: str,
    section: str,
    proxy_server: str,
    join_token: str,
    ca_pin: str,
) -> HostIdentity:
    """The agent's host identity from ``directory``, joining once with ``join_token`` when
    there is none yet (``section`` names the config section in the error that says what to
    set).

    Raises:
        BadParameter: not joined and the join settings are missing, or the stored identity is
            another role's.
    """
    try:
        ident = load_host_identity(directory)
    except NotFound:
        if not (proxy_server and join_token):
            raise BadParameter(
                f"this {role} agent has not joined yet: set {section}.proxy_server, "
                f"{section}.join_token (bctl tokens add --type={role}) and {section}.ca_pin"
            ) from None
        if not ca_pin:
            raise BadParameter(
                f"{section}.ca_pin is required to join: the sha256:... pin that bastion start "
                "printed (it proves you reach the right cluster)"
            ) from None
        ident = await join_cluster(
            proxy_server, join_token, ca_pin, False, name, role, directory,
            ttl=config.host_certs.ttl,
        )  # fmt: skip
    if ident.role != role:
        raise BadParameter(f"{directory} holds a {ident.role} identity, not a {role} agent's")
    return ident


def host_renewer(
    config: FileConfig, ident: HostIdentity, remote: RemoteAuth, tunnels: TunnelPool, clock: Clock
) -> HostRenewer:
    """Renew the agent's host certificate before it expires (``host_certs``); each renewal
    swaps the API client's and the tunnels' TLS contexts (the next connection uses it)."""
    renewer = HostRenewer(
        ident,
        remote_renew(remote),
        RenewPolicy.from_config(config.host_certs),
        clock=clock,
        on_renewed=[swap_remote(remote)],
    )
    renewer.on_renewed.append(
        lambda i: tunnels.set_ssl_context(
            client_tls_context(i.read("tls.crt"), i.read("tls.key"), i.read("ca.pem"))
        )
    )
    return renewer


async def heartbeat_round(
    resources: Sequence[R],
    send: Callable[[R], Awaitable[None]],
    interval: timedelta,
    clock: Clock,
    kind: str,
) -> None:
    """Announce each resource this agent serves, expiring after three missed ``interval``s
    (a failed one is logged and retried next round)."""
    expires = clock.now() + 3 * interval
    for resource in resources:
        record = resource.model_copy(deep=True)
        record.metadata.expires = expires
        try:
            await send(record)
        except BastionError as exc:
            log.warning("heartbeat failed", kind=kind, name=resource.name, error=exc.message)


def advertised(proxies: Sequence[Resource]) -> set[tuple[str, int]]:
    """The addresses the ``proxy`` records advertise."""
    return {
        parse_addr(p.spec.public_addr, 3080)
        for p in proxies
        if isinstance(p, ProxyServer) and p.spec.public_addr
    }


def follow_proxies(tunnels: TunnelPool, cache: ResourceCache) -> None:
    """Keep a tunnel to each proxy that ``cache`` (fed by the watch of ``proxy``) advertises."""

    def on_line(line: dict[str, Any]) -> None:
        if not cache.state.synced or not (
            line.get("type") == "init" or line.get("kind") == "proxy"
        ):
            return
        tunnels.update(advertised(cache.items("proxy")))

    cache.listeners.append(on_line)


def in_process_bootstrap(config: FileConfig, proxy: Any) -> tuple[str, int]:
    """The address the all-in-one's proxy advertises (``proxy`` is the running ProxyService):
    an in-process agent's bootstrap tunnel, so the pool keeps serving that proxy through the
    in-memory connector (:func:`bastion.tunnel.pool.tunnel_keys`)."""
    return parse_addr(config.proxy_advertised_addr(proxy.listener.port), 3080)


def follow_local_proxies(
    tunnels: TunnelPool, server: AuthServer, interval: timedelta = LOCAL_PROXY_POLL
) -> Callable[[], Coroutine[Any, Any, None]]:
    """In the all-in-one: keep ``tunnels`` matching the proxies that heartbeat to ``server``
    (read every ``interval``: proxies heartbeat every 10 s and expire after 30 s)."""

    async def run() -> None:
        while True:
            try:
                tunnels.update(advertised(await server.proxies.list()))
            except BastionError as exc:
                log.warning("reading the proxy list failed; retrying", error=exc.message)
            await asyncio.sleep(interval.total_seconds())

    return run
