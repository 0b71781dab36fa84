"""bsh to a leaf cluster through the root's proxy (docs/trusted-clusters.md).

Layer: client. Every request is one route through the root's proxy (``bastion-ssh/1`` with the
root login certificate) whose request line names the leaf cluster; the root relays it through
the leaf's reverse tunnel, and the leaf answers: ``certs`` gives leaf certificates over the
user's own key (the leaf mapped the roles), ``list`` the nodes the mapped roles may see, and a
node request carries SSH end to end to the leaf's node.

Per-session MFA on a leaf: only the leaf knows whether its roles require it, so
:func:`connect_leaf` first connects with the login certificate; when the leaf refuses with
"per-session MFA required" it runs the ceremony with the *root* (:func:`session_credentials`
with ``cluster``: a 1-minute root certificate scoped ``session:<leaf>/<node>:<login>``) and
connects once more presenting that certificate, for the leaf certificates and for the route.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import asyncssh

from bastion.client.profile import Profile
from bastion.client.proxy_conn import (
    DIAL_TIMEOUT,
    RouteReplyProtocol,
    check_profile,
    open_ssh_route,
    parse_route_reply,
    proxy_ssl_context,
    split_host_port,
    strip_cluster,
)
from bastion.client.session_mfa import Solver, session_credentials, session_ssl_context
from bastion.client.ssh import SSH_LOGIN_TIMEOUT, _user_identity, ssh_errors
from bastion.errors import (
    AccessDenied,
    BadParameter,
    BastionError,
    ConnectionProblem,
    RemoteProtocolError,
)
from bastion.protocols.sshroute import PREFERRED_CIPHERS

__all__ = [
    "ClusterTunnel",
    "LeafCredentials",
    "connect_leaf",
    "leaf_call",
    "leaf_credentials",
    "list_clusters",
    "needs_session_mfa",
]

MFA_REFUSAL = "per-session MFA required"
"""What a leaf's refusal says when its roles require per-session MFA (rbac.session_mfa)."""


def needs_session_mfa(exc: BaseException) -> bool:
    """Is this the leaf's refusal for a missing per-session MFA certificate? (pure)"""
    return isinstance(exc, BastionError) and MFA_REFUSAL in exc.message


def _line(cluster: str, **fields: Any) -> bytes:
    return json.dumps({"cluster": cluster, **fields}).encode() + b"\n"


async def leaf_call(
    profile: Profile, cluster: str, op: str, ssl_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """One ``op`` answered by the leaf ``cluster`` (its reply object); ``ssl_context``
    replaces the login certificate (a per-session MFA certificate)."""
    return await _call(profile, _line(cluster, op=op), f"cluster {cluster}", ssl_context)


async def list_clusters(profile: Profile) -> list[dict[str, Any]]:
    """The leaf clusters this user may reach (``op: clusters``, answered by the root proxy):
    name, status, last heartbeat, and the roles and logins each leaf maps the user to."""
    reply = await _call(profile, json.dumps({"op": "clusters"}).encode() + b"\n", "the proxy")
    found = reply.get("clusters", [])
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


async def _call(
    profile: Profile, request: bytes, who: str, ssl_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    check_profile(profile)
    host, port = split_host_port(profile.proxy)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            transport, proto = await loop.create_connection(
                RouteReplyProtocol,
                host,
                port,
                ssl=ssl_context or proxy_ssl_context(profile),
                server_hostname=host,
            )
            try:
                transport.write(request)
                line = await proto.reply
            finally:
                transport.close()
    except TimeoutError:
        raise ConnectionProblem(f"timed out asking {who} through {profile.proxy}") from None
    except OSError as exc:
        raise ConnectionProblem(f"cannot reach the proxy at {profile.proxy}: {exc}") from None
    parse_route_reply(line)
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise RemoteProtocolError("malformed reply from the leaf cluster")
    return reply


@dataclass(frozen=True, slots=True)
class LeafCredentials:
    ssh_cert: str
    ssh_host_ca: list[str]
    user: str
    roles: list[str]
    logins: list[str]


async def leaf_credentials(
    profile: Profile, cluster: str, ssl_context: ssl.SSLContext | None = None
) -> LeafCredentials:
    reply = await leaf_call(profile, cluster, "certs", ssl_context)
    if not reply.get("ssh_cert"):
        raise BadParameter(f"cluster {cluster} gives you no logins (its roles grant none)")
    return LeafCredentials(
        ssh_cert=str(reply["ssh_cert"]),
        ssh_host_ca=[str(k) for k in reply.get("ssh_host_ca", [])],
        user=str(reply.get("user", "")),
        roles=[str(r) for r in reply.get("roles", [])],
        logins=[str(r) for r in reply.get("logins", [])],
    )


class ClusterTunnel:
    """asyncssh ``tunnel=``: each SSH connection is one route to the leaf's node."""

    def __init__(
        self,
        profile: Profile,
        cluster: str,
        login: str,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.profile, self.cluster, self.login, self.timeout = profile, cluster, login, timeout
        self.ssl_context = ssl_context

    async def create_connection(
        self, session_factory: Any, host: str, port: int
    ) -> tuple[asyncio.Transport, Any]:
        node = strip_cluster(host, self.cluster)
        request = _line(self.cluster, node=node, login=self.login, port=port)
        return await open_ssh_route(
            self.profile,
            node,
            self.login,
            port,
            session_factory,
            self.timeout,
            ssl_context=self.ssl_context,
            request=request,
        )


async def connect_leaf(
    profile: Profile,
    cluster: str,
    node: str,
    login: str,
    port: int = 22,
    *,
    dial_timeout: float = DIAL_TIMEOUT,
    keepalive_interval: float = 30,
    keepalive_count_max: int = 3,
    solver: Solver | None = None,
) -> asyncssh.SSHClientConnection:
    """An SSH connection to ``login@node`` of the leaf ``cluster``: leaf certificates first
    (the leaf's own decision), then the route, with the leaf's host CA as the only trust.

    When the leaf refuses for missing per-session MFA, the ceremony runs with the root
    (``solver`` answers it; default: the security key) and the connection is tried once more
    with the 1-minute certificate scoped to this leaf, node and login.
    """

    async def connect(ctx: ssl.SSLContext | None) -> asyncssh.SSHClientConnection:
        return await _connect_leaf(
            profile,
            cluster,
            node,
            login,
            port,
            ctx,
            dial_timeout=dial_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
        )

    try:
        return await connect(None)
    except BastionError as exc:
        if not needs_session_mfa(exc):
            raise
        refusal = exc.message
    target = strip_cluster(node, cluster)
    try:
        session = await session_credentials(profile, target, login, solver, cluster=cluster)
    except BastionError as exc:  # no security key, a refused assertion, ...
        raise AccessDenied(
            f"{refusal} (cluster {cluster}); the MFA ceremony failed: {exc.message}"
        ) from None
    if session is None:  # the root always asks for a leaf target; fail closed
        raise AccessDenied(f"{MFA_REFUSAL}: the root cluster did not run the MFA ceremony")
    return await connect(session_ssl_context(profile, session))


async def _connect_leaf(
    profile: Profile,
    cluster: str,
    node: str,
    login: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    dial_timeout: float,
    keepalive_interval: float,
    keepalive_count_max: int,
) -> asyncssh.SSHClientConnection:
    key, _ = _user_identity(profile)
    if (profile.path / "key.tpm").exists() and (profile.path / "tls.key").exists():
        # an older --key-store=tpm profile: the leaf certifies its software TLS key
        try:
            key = asyncssh.read_private_key(str(profile.path / "tls.key"))
        except (asyncssh.KeyImportError, OSError) as exc:
            raise BadParameter(f"cannot read the TLS key of {profile.name}: {exc}") from None
    creds = await leaf_credentials(profile, cluster, ssl_context)
    try:
        cert = asyncssh.import_certificate(creds.ssh_cert)
        host_cas = [asyncssh.import_public_key(k) for k in creds.ssh_host_ca]
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter(f"the leaf's certificates do not load: {exc}") from None
    with ssh_errors(node, login):
        conn: asyncssh.SSHClientConnection = await asyncssh.connect(
            node,
            port,
            tunnel=ClusterTunnel(profile, cluster, login, dial_timeout, ssl_context),
            config=[],
            username=login,
            client_keys=[(key, cert)],
            known_hosts=([], host_cas, []),
            encryption_algs=PREFERRED_CIPHERS,
            login_timeout=SSH_LOGIN_TIMEOUT,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
        )
    return conn
