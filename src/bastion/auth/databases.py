"""The database inventory: heartbeats of ``db`` resources and what a user may see of them.

Layer: auth (trusted core; the API handlers in :mod:`bastion.api.db` pass the caller's verified
identity and role set).

* :meth:`DatabaseInventory.heartbeat`: a database agent (host identity with the ``db`` role)
  announces a database it serves. The record is bound to the agent's host id (an agent cannot
  take over a name another live agent holds), expires unless refreshed (a heartbeat, like a
  node's: not an audited change), and is what the proxy routes by.
* :meth:`DatabaseInventory.visible`: the databases a user's roles select by ``db_labels``
  (``bsh db ls``), with the db users and db names the roles allow there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bastion.auth.server import AuthServer
from bastion.errors import AccessDenied, NotFound
from bastion.rbac.checker import RoleSet
from bastion.types.database import Database
from bastion.types.identity import Identity

__all__ = ["DB_HEARTBEAT_MAX_TTL", "DatabaseInventory", "VisibleDatabase"]

DB_HEARTBEAT_MAX_TTL = timedelta(minutes=10)
"""A heartbeat record lives at most this long without a refresh."""


@dataclass(frozen=True, slots=True)
class VisibleDatabase:
    database: Database
    db_users: tuple[str, ...]
    """Allowed db users (patterns, templates expanded) of the roles that select it."""
    db_names: tuple[str, ...]


class DatabaseInventory:
    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth

    async def heartbeat(self, db: Database, agent: Identity, remote_addr: str) -> Database:
        """Upsert a database the agent serves, bound to the agent's host id.

        Raises:
            AccessDenied: not a database agent, or the name is held by another live agent.
        """
        if agent.kind != "host" or "db" not in agent.roles or not agent.host_id:
            raise AccessDenied("access denied: database heartbeats come from database agents")
        store = self._auth.databases
        try:
            existing: Database | None = await store.get(db.name)
        except NotFound:
            existing = None
        if existing is not None and existing.spec.host_id not in ("", agent.host_id):
            await self._auth.audit.emit(
                "db.rejected",
                outcome="failure",
                user=agent.user,
                target=f"db/{db.name}",
                remote_addr=remote_addr,
                reason=f"name already held by host {existing.spec.host_id}",
            )
            raise AccessDenied(f"database name {db.name!r} is already served by another agent")
        if existing is not None and not existing.metadata.expires:
            raise AccessDenied(
                f"database {db.name!r} was created by an administrator (bctl create): "
                "delete it or rename the agent's entry"
            )
        latest = self._auth.clock.now() + DB_HEARTBEAT_MAX_TTL
        record = db.model_copy(deep=True)
        record.spec.host_id = agent.host_id
        expires = record.metadata.expires
        record.metadata.expires = min(expires, latest) if expires else latest
        record.metadata.revision = ""
        stored: Database = await store.upsert(record)
        return stored

    async def visible(
        self, roles: RoleSet, labels: dict[str, str] | None = None
    ) -> list[VisibleDatabase]:
        """The databases ``roles`` select by ``db_labels`` (deny labels win), filtered by
        ``labels`` (all must match), by name."""
        out = []
        for db in await self._auth.databases.list():
            found = db.all_labels()
            if labels and any(found.get(k) != v for k, v in labels.items()):
                continue
            shown = visible_to(roles, db)
            if shown is not None:
                out.append(shown)
        return sorted(out, key=lambda v: v.database.name)


def visible_to(roles: RoleSet, db: Database) -> VisibleDatabase | None:
    """What ``roles`` may see of ``db`` (None: nothing)."""
    found = db.all_labels()
    if any(r.deny.db.matches(found) for r in roles.roles):
        return None
    if not roles.check_resource_visible("db", db.name, found).allowed:
        return None  # no allow selector, or outside the certificate's access request
    users: list[str] = []
    names: list[str] = []
    selected = False
    for role in roles.roles:
        if role.allow.db.matches(found):
            selected = True
            users += [u for u in role.allow.db_users.values if u not in users]
            names += [n for n in role.allow.db_names.values if n not in names]
    if not selected:
        return None
    return VisibleDatabase(db, tuple(users), tuple(names))
