"""Access explained, for admins: load users, roles, nodes and locks, ask the pure explainer.

Layer: auth (domain). :mod:`bastion.rbac.explain` decides and explains; this module reads the
stored state it needs, adds the lock that applies (``bastion.locks.matcher``) and the cluster's
MFA and time-zone settings, and shapes the answers for ``GET /v1/access/{check,ls,who}``. The
caller has already been checked for ``read`` on ``role`` and ``user`` (the API route does it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bastion.auth.server import AuthServer
from bastion.clock import in_zone
from bastion.errors import NotFound
from bastion.locks.matcher import LockTargets, describe_target, matching_locks
from bastion.protocols.sshroute import find_node
from bastion.rbac.explain import Subject, explain_node_access, reachable, who_can
from bastion.types.access import User

__all__ = ["AccessExplainer"]


class AccessExplainer:
    """``check``, ``ls`` and ``who`` over the auth server's current state."""

    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth

    async def _subject(self, user: User) -> Subject:
        stored = {r.name: r for r in await self._auth.roles.list()}
        roles = tuple(stored[name] for name in user.spec.roles if name in stored)
        return Subject(user.name, roles, user.spec.traits)

    async def _when(self, at: datetime | None) -> tuple[datetime, bool]:
        pref = await self._auth.auth_preference()
        moment = at or self._auth.clock.now()
        return in_zone(moment, pref.spec.time_zone), pref.spec.require_session_mfa

    async def check(
        self,
        user: str,
        node: str,
        login: str,
        *,
        at: datetime | None = None,
        source_ip: str = "",
        mfa_verified: bool = False,
    ) -> dict[str, Any]:
        """The decision for ``user`` as ``login`` on ``node`` with every role's verdict, the
        locks that apply, and whether MFA would be required.

        Raises:
            NotFound: no such user or node.
        """
        subject = await self._subject(await self._auth.users.get(user))
        found = find_node(await self._auth.nodes.list(), node, self._auth.cluster)
        if found is None:
            raise NotFound(f"node {node} not found")
        when, cluster_mfa = await self._when(at)
        context = subject.context(time=when, source_ip=source_ip, mfa_verified=mfa_verified)
        explanation = explain_node_access(
            subject,
            found.name,
            found.all_labels(),
            login,
            context=context,
            cluster_requires_mfa=cluster_mfa,
        )
        answer = explanation.to_dict()
        targets = LockTargets(
            user=user,
            roles=tuple(r.name for r in subject.roles),
            login=login,
            nodes=tuple(n for n in (found.name, found.spec.host_id) if n),
        )
        locks = matching_locks(await self._auth.locks.list(), targets, self._auth.clock.now())
        answer["locks"] = [
            {"name": lock.name, "target": describe_target(lock), "message": lock.spec.message}
            for lock in locks
        ]
        if locks and explanation.decision.allowed:
            answer["allowed"] = False
            answer["reason"] = f'{answer["reason"]}; but lock "{locks[0].name}" applies'
        answer["at"] = when.isoformat()
        return answer

    async def ls(self, user: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Every (node, login) ``user`` may reach (locks aside)."""
        subject = await self._subject(await self._auth.users.get(user))
        when, cluster_mfa = await self._when(at)
        nodes = [(n.name, n.all_labels()) for n in await self._auth.nodes.list()]
        grants = reachable(
            subject, nodes, context=subject.context(time=when), cluster_requires_mfa=cluster_mfa
        )
        return [g.to_dict() for g in grants]

    async def who(
        self, node: str, login: str, *, at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The users who may log in as ``login`` on ``node`` (locks aside).

        Raises:
            NotFound: no such node.
        """
        found = find_node(await self._auth.nodes.list(), node, self._auth.cluster)
        if found is None:
            raise NotFound(f"node {node} not found")
        stored = {r.name: r for r in await self._auth.roles.list()}
        subjects = [
            Subject(u.name, tuple(stored[n] for n in u.spec.roles if n in stored), u.spec.traits)
            for u in await self._auth.users.list()
        ]
        when, cluster_mfa = await self._when(at)
        grants = who_can(
            subjects,
            [(found.name, found.all_labels())],
            login,
            time=when,
            cluster_requires_mfa=cluster_mfa,
        )
        return [g.to_dict() for g in grants]
