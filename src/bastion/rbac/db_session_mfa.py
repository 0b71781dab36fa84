"""Per-session MFA for databases: when it is required, the scope, and the check of the proxy.

Layer: policy (pure, like :mod:`bastion.rbac.session_mfa`, whose rule and scope format it
shares). The scope of a database session certificate is ``session:db/<database>:<db user>``
("db/NAME" never names a node: node names contain no ``/``), its route names that database and
db user, and it lives one minute (:data:`~bastion.rbac.session_mfa.SESSION_CERT_TTL`).

The rule is the SSH one (Teleport's): MFA is required when the cluster requires it, or when
*every* role that allows this db user (and db name) on this database has
``require_session_mfa``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from bastion.rbac.checker import RoleSet
from bastion.rbac.conditions import AccessContext
from bastion.rbac.session_mfa import (
    SessionMFARefused,
    is_session_identity,
    parse_session_scope,
    session_scope,
)
from bastion.types.access import Role
from bastion.types.identity import Identity

__all__ = [
    "DB_MFA_REQUIRED_MESSAGE",
    "DB_SCOPE_PREFIX",
    "check_db_session_mfa",
    "db_mfa_required",
    "db_session_scope",
]

DB_SCOPE_PREFIX: Final = "session:db/"
"""The scope prefix of database per-session certificates."""
DB_MFA_REQUIRED_MESSAGE: Final = (
    "per-session MFA required for this database: run bsh db login NAME (or bsh db connect / "
    "bsh proxy db), which asks for your security key"
)


def db_session_scope(db_service: str, db_user: str) -> str:
    """``session:db/<database>:<db user>``.

    Raises:
        ValueError: an empty name or db user, or a name with ``:``.
    """
    return session_scope(f"db/{db_service}", db_user)


def db_mfa_required(
    roles: Sequence[Role],
    traits: Mapping[str, Sequence[str]],
    db_labels: Mapping[str, str],
    db_user: str,
    db_name: str | None,
    *,
    db_service: str,
    context: AccessContext | None,
    cluster_requires_mfa: bool,
) -> bool:
    """Whether a connection the roles allow needs a per-session MFA certificate."""
    if cluster_requires_mfa:
        return True
    granting = [
        role
        for role in roles
        if RoleSet.from_roles([role], traits)
        .check_db_access(db_labels, db_user, db_name, db_service=db_service, context=context)
        .allowed
    ]
    return bool(granting) and all(r.spec.options.require_session_mfa for r in granting)


def check_db_session_mfa(
    identity: Identity, *, db_service: str, db_user: str, required: bool
) -> SessionMFARefused | None:
    """May this certificate open a session as ``db_user`` on ``db_service``?

    A per-session certificate is good only for its own database and db user (whatever the
    roles say); where MFA is required, an ordinary certificate is refused with
    :data:`DB_MFA_REQUIRED_MESSAGE` (``NAME`` filled in).
    """
    if is_session_identity(identity):
        scoped = parse_session_scope(identity.mfa_scope)
        route = identity.route
        want = (f"db/{db_service}", db_user)
        reason = ""
        if scoped is None or not identity.mfa_verified:
            reason = f"malformed per-session MFA certificate (scope {identity.mfa_scope!r})"
        elif scoped != want:
            reason = (
                f"per-session MFA certificate is for {scoped[1]}@{scoped[0]}, not "
                f"{db_user}@db/{db_service}"
            )
        elif route is None or route.db_service != db_service or route.db_user != db_user:
            reason = "per-session MFA certificate route does not match its scope"
        if reason:
            return SessionMFARefused(f"access denied: {reason}", reason)
        return None
    if required:
        return SessionMFARefused(
            DB_MFA_REQUIRED_MESSAGE.replace("NAME", db_service),
            f"per-session MFA required for {db_user}@db/{db_service}; ordinary certificate",
        )
    return None
