"""bsh's side of per-session MFA: ask whether a target needs it, then get a 1-minute certificate.

Layer: client edge (IO). :func:`session_credentials` asks the auth API (through the proxy, with the
login certificate) ``POST /v1/certs/session/challenge``; when the answer is ``mfa_required`` it
lets the security key answer the challenge (:func:`bastion.client.mfa.solve`) and exchanges the
assertion for SSH + X.509 certificates scoped to that node and login (``POST /v1/certs/session``).
An enrolled machine runs the device ceremony for them too (a fresh challenge from the ping,
signed by the TPM; with ``--key-store=tpm`` the AK certifies the key they are for), so
``require_hardware_key`` admits them (docs/device-trust.md).

The certificates stay in memory: the SSH one is handed to asyncssh as an object, and the X.509 one
(for the proxy's mTLS) is loaded into an ``SSLContext`` through a private temporary file that is
removed at once (``ssl`` loads certificates only from files). The private key is the profile's,
which never leaves the machine. A certificate lives one minute and is good for one connection
attempt's node and login only; nothing is cached.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.client.api import AuthClient
from bastion.client.device.ceremony import LoginKeys, request_keys
from bastion.client.mfa import origin_for, solve
from bastion.client.profile import Profile
from bastion.client.tls import profile_context
from bastion.contract.mfa import SESSION_CERTS, SESSION_CHALLENGE, SessionIssue, SessionTarget
from bastion.errors import AccessDenied, BastionError, RemoteProtocolError
from bastion.protocols.alpn import ALPN_HTTP, ALPN_SSH

__all__ = [
    "SessionCredentials",
    "check_forwarding",
    "Solver",
    "parse_issued",
    "profile_api_context",
    "session_credentials",
    "session_ssl_context",
]

Solver = Callable[[dict[str, Any]], dict[str, Any]]
"""Answers WebAuthn request options (blocking: a USB key waits for a touch)."""


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """Per-session MFA certificates for one node and login (public parts only)."""

    node: str
    login: str
    ssh_cert: str
    tls_cert: str
    expires: str


def parse_issued(data: Any) -> SessionCredentials:
    """Check the ``POST /v1/certs/session`` answer (pure).

    Raises:
        RemoteProtocolError: a field is missing or not a string.
    """
    if not isinstance(data, dict):
        raise RemoteProtocolError("the server's session certificate answer is not an object")
    values = {}
    for name in ("node", "login", "ssh_cert", "tls_cert", "expires"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise RemoteProtocolError(f"the server's session certificate answer lacks {name!r}")
        values[name] = value
    return SessionCredentials(**values)


def profile_api_context(profile: Profile) -> ssl.SSLContext:
    """mTLS to the proxy's API (ALPN http/1.1) with the profile's login certificate."""
    return profile_context(profile.path, profile.name, [ALPN_HTTP])


def _default_solver(profile: Profile) -> Solver:
    origin = origin_for(profile.proxy)

    def run(options: dict[str, Any]) -> dict[str, Any]:
        sys.stderr.write("per-session MFA: touch your security key\n")
        sys.stderr.flush()
        return solve(options, origin, profile_dir=profile.path)

    return run


def check_forwarding(answer: Any, forwards: bool) -> None:
    """Refuse ``-L``/``-R`` with the reason when the roles forbid port forwarding (pure): the
    SSH protocol's own refusal carries no reason (OpenSSH prints nothing for ``-L``).

    Raises:
        AccessDenied: ``forwards`` and the challenge answer says ``port_forwarding: false``.
    """
    if forwards and isinstance(answer, dict) and answer.get("port_forwarding") is False:
        raise AccessDenied(
            "port forwarding (-L/-R) is not allowed by your roles (role option "
            "port_forwarding: false); ask an admin, or connect without -L/-R"
        )


async def session_credentials(
    profile: Profile,
    node: str,
    login: str,
    solver: Solver | None = None,
    *,
    forwards: bool = False,
    cluster: str = "",
) -> SessionCredentials | None:
    """Per-session certificates for ``login@node`` when the target requires MFA, else None.

    With ``forwards`` (``-L``/``-R`` asked for), roles that forbid port forwarding are refused
    here, with the reason, before any connection or MFA ceremony. ``cluster`` names a leaf
    cluster of the profile's (root) cluster: the root then always asks for the ceremony and the
    certificates are for ``login@node`` of that leaf (docs/trusted-clusters.md).

    Raises:
        NotFound / AccessDenied: as the server decided (no such node, not allowed, no port
            forwarding); the MFA ceremony's errors (no security key, a refused assertion).
    """
    public_key = (profile.path / "key.pub").read_text().strip()
    if (profile.path / "key.tpm").exists():  # --key-store=tpm: one key for both 1-minute
        from bastion.client.device.tpm_key import tls_public_line  # certificates, the TLS one

        public_key = tls_public_line(profile.path)
    async with AuthClient(profile.proxy, profile_api_context(profile)) as client:
        target = SessionTarget(node=node, login=login, cluster=cluster)
        answer = await client.send(SESSION_CHALLENGE, target)
        check_forwarding(answer.model_dump(), forwards)
        if not answer.mfa_required:
            return None
        if answer.challenge is None:
            raise RemoteProtocolError("the server asked for MFA but sent no challenge")
        response = await asyncio.to_thread(solver or _default_solver(profile), answer.challenge)
        # The device ceremony for this certificate too; with --key-store=tpm the AK certifies
        # the TPM-held key it is issued for (require_hardware_key).
        keys = await _session_keys(client, profile)
        issued = await client.send(
            SESSION_CERTS,
            SessionIssue(
                node=node,
                login=login,
                public_key=public_key,
                mfa_response=response,
                cluster=cluster,
                device=keys.device,  # certifies the key of both certificates (public_key)
            ),
        )
    return parse_issued(issued.model_dump())


async def _session_keys(client: AuthClient, profile: Profile) -> LoginKeys:
    """The device proof for a per-session certificate (:func:`request_keys`): a TPM-held key
    needs it; with a software key a failing TPM leaves the certificate without the device
    (said on stderr, as ``bsh login`` does)."""
    key_store = "tpm" if (profile.path / "key.tpm").exists() else "software"
    home = profile.path.parent.parent  # BSH_HOME/profiles/CLUSTER
    try:
        return await request_keys(client, home, profile.path, profile.cluster, key_store)
    except BastionError as exc:
        if key_store == "tpm":
            raise
        sys.stderr.write(f"warning: device authentication failed: {exc.message}\n")
        return LoginKeys()


def session_ssl_context(profile: Profile, creds: SessionCredentials) -> ssl.SSLContext:
    """The proxy's mTLS context presenting the session X.509 certificate (ALPN bastion-ssh/1).

    Raises:
        ClientTLSError: the profile's files are missing, or the certificate does not load with
            the profile's key.
    """
    return profile_context(profile.path, profile.name, [ALPN_SSH], cert_pem=creds.tls_cert)
