"""The built-in roles of every cluster: ``access``, ``editor`` and ``auditor`` (Teleport's presets).

Layer: policy (pure data). Built as validated :class:`~bastion.types.access.Role` models at import
time; the auth server seeds them and refuses to delete them (not this module's concern).
"""

from __future__ import annotations

from bastion.types.access import ADMIN_KINDS, Role, RoleConditions, RoleSpec, Rule
from bastion.types.meta import Metadata

__all__ = ["ACCESS_ROLE", "AUDITOR_ROLE", "BUILTIN_ROLES", "EDITOR_ROLE", "builtin_role"]

_EVERYTHING = {"*": ["*"]}
_AUDIT_KINDS = ["event", "session"]
_EDITABLE_KINDS = [kind for kind in ADMIN_KINDS if kind not in _AUDIT_KINDS]
"""Every kind an admin rule can name (:data:`bastion.types.access.ADMIN_KINDS`, the one list)
except the audit records, which are read-only."""


def _role(name: str, description: str, allow: RoleConditions) -> Role:
    return Role(
        metadata=Metadata(
            name=name, description=description, labels={"bastion.dev/builtin": "true"}
        ),
        spec=RoleSpec(allow=allow),
    )


ACCESS_ROLE = _role(
    "access",
    "Log in to every node, database and app with the logins and db accounts of the user's traits.",
    RoleConditions(
        logins=["{{internal.logins}}"],
        node_labels=_EVERYTHING,
        db_labels=_EVERYTHING,
        app_labels=_EVERYTHING,
        db_users=["{{internal.db_users}}"],
        db_names=["{{internal.db_names}}"],
        rules=[Rule(resources=["node"], verbs=["list", "read"])],
    ),
)

EDITOR_ROLE = _role(
    "editor",
    "Manage users, roles, tokens, certificate authorities (incl. rotation), nodes, auth "
    "preference and locks; read the audit log and sessions. No logins.",
    RoleConditions(
        rules=[
            Rule(resources=list(_EDITABLE_KINDS), verbs=["*"]),
            Rule(resources=list(_AUDIT_KINDS), verbs=["list", "read"]),
        ],
    ),
)

AUDITOR_ROLE = _role(
    "auditor",
    "Read the audit log and session recordings.",
    RoleConditions(rules=[Rule(resources=list(_AUDIT_KINDS), verbs=["list", "read"])]),
)

BUILTIN_ROLES: dict[str, Role] = {
    r.metadata.name: r for r in (ACCESS_ROLE, EDITOR_ROLE, AUDITOR_ROLE)
}
"""Shared instances: treat as read-only; use :func:`builtin_role` for a copy to modify."""


def builtin_role(name: str) -> Role:
    """A deep copy of a built-in role, safe to modify.

    Args:
        name: ``access``, ``editor`` or ``auditor``.

    Returns:
        The role.

    Raises:
        KeyError: not a built-in role.
    """
    return BUILTIN_ROLES[name].model_copy(deep=True)
