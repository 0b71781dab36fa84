"""Automatic database user provisioning: which roles turn it on, and the database roles granted.

Layer: policy (pure). Values in, a value out.

A role with ``options.create_db_user: true`` whose ``allow.db_labels`` match a database makes
the database agent create the db user on the first connection (and disable it when the last
session ends). The db user is always the Bastion user name (as Teleport does): the user cannot
pick another account, so the roles' ``db_users`` need not list it. The database roles granted
are the union of ``allow.db_roles`` (templates expanded) of those roles. A Bastion user name
that is not a safe database identifier is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from bastion.errors import BadParameter
from bastion.rbac.labels import LabelSelector
from bastion.types.access import Role
from bastion.types.templates import expand_values

__all__ = ["DB_IDENTIFIER", "check_db_identifier", "provisioned_roles", "with_db_user"]

DB_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,62}")
"""A db user or role name the agent creates: at most 63 bytes (PostgreSQL's NAMEDATALEN - 1),
letters, digits and ``_.@+-``; always quoted in SQL anyway."""


def check_db_identifier(name: str, what: str = "db user") -> str:
    """Raises: BadParameter (one line) when ``name`` cannot be a provisioned identifier."""
    if not DB_IDENTIFIER.fullmatch(name):
        raise BadParameter(
            f"{what} {name[:80]!r} cannot be created automatically: use at most 63 letters, "
            "digits and _.@+- (starting with a letter, digit or _)"
        )
    return name


def provisioned_roles(
    roles: Sequence[Role], traits: Mapping[str, Sequence[str]], db_labels: Mapping[str, str]
) -> tuple[str, ...] | None:
    """The database roles to grant, or ``None`` when no role provisions users on this database.

    A role takes part when it has ``create_db_user`` and its ``allow.db_labels`` match the
    database's labels. Role names are sorted and deduplicated.

    Raises:
        BadParameter: a database role name that is not a safe identifier.
    """
    found = False
    grants: set[str] = set()
    for role in roles:
        spec = role.spec
        if not spec.options.create_db_user:
            continue
        selector = LabelSelector.compile(
            {k: expand_values(v, traits) for k, v in spec.allow.db_labels.items()}
        )
        if not selector.matches(db_labels):
            continue
        found = True
        grants.update(expand_values(spec.allow.db_roles, traits))
    if not found:
        return None
    return tuple(check_db_identifier(g, "database role") for g in sorted(grants))


def with_db_user(roles: Sequence[Role], db_user: str) -> list[Role]:
    """``roles`` where every ``create_db_user`` role also allows ``db_user`` (the Bastion user
    name), so that the RBAC check of the connection accepts the provisioned account; deny
    sections are untouched."""
    out: list[Role] = []
    for role in roles:
        if role.spec.options.create_db_user and db_user not in role.spec.allow.db_users:
            allow = role.spec.allow.model_copy(
                update={"db_users": [*role.spec.allow.db_users, db_user]}
            )
            role = role.model_copy(update={"spec": role.spec.model_copy(update={"allow": allow})})
        out.append(role)
    return out
