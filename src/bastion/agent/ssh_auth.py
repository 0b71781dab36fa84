"""Who may log in to this node: user certificates, their identity document, and RBAC.

Layer: agent, mostly pure. :func:`authorize_certificate` takes a certificate blob and the
request and returns an :class:`Authorized` (identity + role set, kept on the connection for
later checks) or raises :class:`~bastion.errors.AccessDenied` with the reason that goes to the
audit log. It fails closed: a parse error, a verification error or a role lookup error all mean
"refuse".

asyncssh checks the same certificate too (user CA via ``cert-authority`` authorized keys,
validity, principals, ``source-address``); this second, independent check is the one that can
read our identity extension, which asyncssh drops (STYLE.md design constraint 1, option b).
:mod:`.ssh_node` wires it into asyncssh by wrapping the connection's
``_validate_openssh_certificate`` (see :func:`install_certificate_hook`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.agent.deps import RoleSource
from bastion.ca.keys import PublicKey
from bastion.ca.sshcert import (
    SSHCertificate,
    identity_from_ssh_certificate,
    parse_ssh_certificate,
    verify_ssh_certificate,
)
from bastion.clock import in_zone
from bastion.errors import AccessDenied, BastionError
from bastion.rbac.checker import RoleSet
from bastion.rbac.conditions import AccessContext, source_ip_of
from bastion.rbac.device_trust import DEVICE_REQUIRED_MESSAGE, effective_device_mode
from bastion.rbac.session_mfa import check_session_mfa
from bastion.types.devices import DeviceTrustMode
from bastion.types.identity import Identity

__all__ = [
    "Authorized",
    "CertificateHook",
    "authorize_certificate",
    "install_certificate_hook",
]


@dataclass(frozen=True, slots=True)
class Authorized:
    """A certificate that passed every check, and what it grants."""

    identity: Identity
    roles: RoleSet
    certificate: SSHCertificate
    login: str
    reason: str
    """Why RBAC allowed (the deciding role)."""

    @property
    def cert_serial(self) -> str:
        return str(self.certificate.serial)


async def authorize_certificate(
    cert_blob: bytes,
    login: str,
    *,
    cluster: str,
    node_name: str,
    node_labels: Mapping[str, str],
    user_ca_keys: Sequence[PublicKey],
    roles: RoleSource,
    now: datetime,
    client_address: str | None,
    host_id: str = "",
    cluster_session_mfa: bool = False,
    time_zone: str = "UTC",
    cluster_device_mode: DeviceTrustMode = "off",
) -> Authorized:
    """Check a user certificate presented for ``login`` on this node.

    Args:
        cert_blob: the OpenSSH certificate as sent by the client.
        login: the requested OS login (SSH user name).
        cluster: this node's cluster; identities of other clusters are refused.
        node_name: this node's name (for RBAC and reasons).
        node_labels: this node's current labels (static and dynamic).
        user_ca_keys: the trusted user CA keys.
        roles: current role definitions.
        now: the time to check validity at.
        client_address: the client's IP (``source-address`` critical option).
        host_id: this node's host id (a per-session certificate may name the node by it).
        cluster_session_mfa: the cluster auth preference's ``require_session_mfa``.
        time_zone: the cluster's time zone (``request.time`` of role conditions).
        cluster_device_mode: the auth preference's ``device_trust.mode``; with the roles'
            ``device_trust_mode`` it decides whether a trusted device is required here.

    Returns:
        The identity and role set.

    Raises:
        AccessDenied: with the reason (unknown CA, expired, login not a principal, foreign
            cluster, missing identity, a role denying the node, roles unavailable);
            :class:`~bastion.rbac.session_mfa.SessionMFARefused` (a subclass, with a message
            for the user) when per-session MFA is required and this is an ordinary certificate,
            or when a per-session certificate is for another node or login.
    """
    try:
        cert = parse_ssh_certificate(cert_blob)
        verify_ssh_certificate(
            cert,
            user_ca_keys,
            now,
            cert_type="user",
            principal=login,
            client_address=client_address,
        )
        identity = identity_from_ssh_certificate(cert)
    except AccessDenied:
        raise
    except BastionError as exc:  # RemoteProtocolError and friends: fail closed
        raise AccessDenied(f"unreadable certificate: {exc}") from None
    if identity.cluster != cluster:
        raise AccessDenied(
            f'certificate identity is for cluster "{identity.cluster}", this node is in "{cluster}"'
        )
    if identity.kind not in ("user", "admin", "bot"):
        raise AccessDenied(f"a {identity.kind} identity cannot open sessions")
    try:
        role_list = await roles.get_roles(identity.roles)
    except BastionError as exc:
        raise AccessDenied(f"roles of {identity.user!r} are unavailable: {exc}") from None
    role_set = RoleSet.from_roles(role_list, identity.traits, identity.allowed_resources)
    try:
        local: datetime | None = in_zone(now, time_zone)
    except ValueError:
        local = None  # time conditions then fail closed
    context = AccessContext.for_identity(
        identity, source_ip=source_ip_of(client_address or ""), time=local
    )
    decision = role_set.check_node_access(
        node_name, node_labels, login, cluster_requires_mfa=cluster_session_mfa, context=context
    )
    if not decision.allowed:
        raise AccessDenied(decision.reason)
    device_modes = [role.spec.options.device_trust_mode for role in role_list]
    if not identity.device_id and (
        effective_device_mode(cluster_device_mode, device_modes) == "required"
    ):
        raise AccessDenied(f"{DEVICE_REQUIRED_MESSAGE} (no trusted device in the certificate)")
    refused = check_session_mfa(
        identity, node_names=(node_name, host_id), login=login, required=decision.mfa_required
    )
    if refused is not None:
        raise refused
    return Authorized(identity, role_set, cert, login, decision.reason)


CertificateHook = Callable[[str, bytes], Awaitable["Authorized | None"]]
"""Our check, called with (login, certificate blob); None refuses (after auditing)."""


def install_certificate_hook(conn: Any, hook: CertificateHook) -> None:
    """Make asyncssh consult ``hook`` before it accepts a user certificate on ``conn``.

    Relies on a private asyncssh method (pinned by ``tests/unit/agent/test_ssh_auth.py``):
    ``SSHServerConnection._validate_openssh_certificate(username, cert)`` is the coroutine that
    checks a user certificate against ``authorized_client_keys`` and returns the client key
    (accept) or None (refuse). We shadow it with an instance attribute on this one connection,
    so other connections and the class stay untouched. Our hook runs first (it can read the
    identity extension from ``cert.public_data``); asyncssh's own checks run only if it passes.
    A role without ``forward_agent`` also clears the certificate's ``permit-agent-forwarding``
    permission for asyncssh, which enforces it.

    asyncssh calls this once per offered certificate and again with the signature, so the last
    call before a successful login is always for the key that logged in (the same "last one
    wins" rule asyncssh uses for its own key options).

    Args:
        conn: an ``asyncssh.SSHServerConnection``.
        hook: our check.

    Raises:
        RuntimeError: the asyncssh version no longer has the method (fail closed at start-up).
    """
    original = getattr(conn, "_validate_openssh_certificate", None)
    if original is None or not inspect.iscoroutinefunction(original):
        raise RuntimeError("asyncssh no longer provides _validate_openssh_certificate")

    async def validate(username: str, cert: Any) -> Any:
        authorized = await hook(username, bytes(cert.public_data))
        if authorized is None:
            return None
        if not authorized.roles.options().forward_agent:
            # asyncssh sets up agent forwarding itself (before any callback of ours) when both
            # the connection option and this certificate permission allow it.
            cert.options["permit-agent-forwarding"] = False
        return await original(username, cert)

    conn._validate_openssh_certificate = validate
