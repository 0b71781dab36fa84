"""Per-session MFA: the scope a session certificate is bound to, and the check proxy and node make.

Layer: policy (pure, like :mod:`bastion.rbac.checker`). Values in, a value out; no IO, no clock.

A *session certificate* is what ``POST /v1/certs/session`` issues after a fresh WebAuthn
ceremony: its identity has ``mfa_verified``, ``mfa_scope = "session:<node>:<login>"`` (the node's
canonical name), a route to that node and login, one login (= the SSH principal) and one minute
of life. Two rules follow (ARCHITECTURE.md 3 and 6.2):

* a session certificate is good for its one node and login only, whatever the roles say, and is
  never a credential for anything else (the auth API refuses it, nothing is re-issued from it);
* where the RBAC decision says ``mfa_required``, only a session certificate for exactly this node
  and login is accepted; an ordinary login certificate is refused with :data:`MFA_REQUIRED_MESSAGE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from bastion.errors import AccessDenied
from bastion.types.identity import Identity

__all__ = [
    "MFA_REQUIRED_MESSAGE",
    "SESSION_CERT_TTL",
    "SESSION_SCOPE_PREFIX",
    "SessionMFARefused",
    "check_session_mfa",
    "is_session_identity",
    "parse_session_scope",
    "session_scope",
]

SESSION_SCOPE_PREFIX: Final = "session:"
SESSION_CERT_TTL: Final = timedelta(minutes=1)
"""Life of a per-session MFA certificate."""
MFA_REQUIRED_MESSAGE: Final = (
    "per-session MFA required: run bsh ssh, which asks for your security key"
)


class SessionMFARefused(AccessDenied):
    """A refusal whose message is meant for the user (like a lock's): what to do next.

    ``reason`` holds the detail for audit.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def session_scope(node: str, login: str) -> str:
    """``session:<node>:<login>``: the scope of a WebAuthn challenge and of the certificate.

    Raises:
        ValueError: an empty node or login, or a node containing ``:`` (node names never do).
    """
    if not node or not login or ":" in node:
        raise ValueError(f"cannot scope a session to node {node!r} and login {login!r}")
    return f"{SESSION_SCOPE_PREFIX}{node}:{login}"


def parse_session_scope(scope: str) -> tuple[str, str] | None:
    """``(node, login)`` of a session scope; None when ``scope`` is not one (or is malformed)."""
    if not scope.startswith(SESSION_SCOPE_PREFIX):
        return None
    node, sep, login = scope[len(SESSION_SCOPE_PREFIX) :].partition(":")
    if not sep or not node or not login:
        return None
    return node, login


def is_session_identity(identity: Identity) -> bool:
    """Does this identity come from a per-session MFA certificate (scoped to one target)?

    Any ``session:`` scope counts, even a malformed one: such a certificate is restricted, not
    ordinary (fail closed).
    """
    return identity.mfa_scope.startswith(SESSION_SCOPE_PREFIX)


def check_session_mfa(
    identity: Identity, *, node_names: Sequence[str], login: str, required: bool
) -> SessionMFARefused | None:
    """May this certificate open ``login`` on the node known by ``node_names``?

    Args:
        identity: the certificate's identity (RBAC has already allowed the access).
        node_names: the target node's canonical name first, then other names (host id).
        login: the requested login.
        required: the RBAC decision's ``mfa_required``.

    Returns:
        None when allowed; otherwise the refusal (user-facing message + audit reason).
    """
    names = [n for n in node_names if n]
    target = f"{login}@{names[0] if names else '?'}"
    if is_session_identity(identity):
        scoped = parse_session_scope(identity.mfa_scope)
        route = identity.route
        reason = ""
        if scoped is None or not identity.mfa_verified:
            reason = f"malformed per-session MFA certificate (scope {identity.mfa_scope!r})"
        elif scoped[0] not in names or scoped[1] != login:
            reason = f"per-session MFA certificate is for {scoped[1]}@{scoped[0]}, not {target}"
        elif route is None or route.node != scoped[0] or route.login != scoped[1]:
            reason = "per-session MFA certificate route does not match its scope"
        elif identity.logins != (login,):
            reason = "per-session MFA certificate carries other logins than its scope"
        if reason:
            return SessionMFARefused(f"access denied: {reason}", reason)
        return None
    if required:
        return SessionMFARefused(
            MFA_REQUIRED_MESSAGE, f"per-session MFA required for {target}; ordinary certificate"
        )
    return None
