"""Permissions of host identities (agents and proxies), fixed in code.

A host certificate names its join role (``node``, ``proxy``, ...). Those names are never looked up
among user roles, so no user-defined role can widen what a host may do.
"""

from __future__ import annotations

from bastion.types.access import Role, RoleConditions, RoleSpec, Rule
from bastion.types.meta import Metadata

__all__ = ["SYSTEM_ROLES", "system_roles_for"]


def _role(name: str, rules: list[Rule]) -> Role:
    return Role(
        metadata=Metadata(name=f"system-{name}", description=f"permissions of {name} hosts"),
        spec=RoleSpec(allow=RoleConditions(rules=rules)),
    )


_READ = ["list", "read"]
SYSTEM_ROLES: dict[str, Role] = {
    # Nodes read roles and locks (cached through a watch), heartbeat themselves, send events.
    "node": _role(
        "node",
        [
            Rule(resources=["role", "lock", "cluster_auth_preference"], verbs=_READ),
            Rule(resources=["node"], verbs=["read", "update"]),
            # Nodes keep a reverse tunnel to every proxy: they read the proxies' heartbeats.
            Rule(resources=["proxy"], verbs=_READ),
            Rule(resources=["event"], verbs=["create"]),
            # Nodes upload the recordings of their sessions (only their own: see
            # bastion.auth.recordings).
            Rule(resources=["session"], verbs=["create"]),
        ],
    ),
    # Proxies (in a separate process) route by nodes and roles, run the authentication gate
    # (users: existence and epoch; locks), take leaf clusters' tunnels (remote_cluster: their
    # public CAs; proxy: the root's proxies, pushed to the leaves; cert_authority: this
    # cluster's CAs, also pushed to the leaves: the API strips every private key), and send
    # events.
    "proxy": _role(
        "proxy",
        [
            Rule(
                resources=["role", "lock", "node", "db", "user", "cluster_auth_preference"],
                verbs=_READ,
            ),
            Rule(resources=["remote_cluster", "proxy", "cert_authority"], verbs=_READ),
            Rule(resources=["event"], verbs=["create"]),
            # The recordings of the database sessions it relays (bastion.auth.recordings).
            Rule(resources=["session"], verbs=["create"]),
        ],
    ),
    "auth": _role("auth", []),
    # Database agents heartbeat their databases (POST /v1/db/heartbeat, bastion.auth.databases)
    # and keep a reverse tunnel to every proxy.
    "db": _role(
        "db",
        [
            Rule(resources=["role", "lock", "proxy"], verbs=_READ),
            Rule(resources=["event"], verbs=["create"]),
        ],
    ),
    # App agents heartbeat their apps (POST /v1/apps/heartbeat, bastion.auth.apps) and keep
    # a reverse tunnel to every proxy.
    "app": _role(
        "app",
        [
            Rule(resources=["role", "lock", "proxy"], verbs=_READ),
            Rule(resources=["event"], verbs=["create"]),
        ],
    ),
    "bot": _role("bot", []),
}


def system_roles_for(names: tuple[str, ...]) -> list[Role]:
    return [SYSTEM_ROLES[n] for n in names if n in SYSTEM_ROLES]
