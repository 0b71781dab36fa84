"""Access explained: why a user may (not) reach a node, what a user reaches, who reaches a node.

Layer: policy (pure). The answers are the checker's own decisions (:class:`RoleSet`), never a
second implementation: :func:`explain_node_access` returns the decision of the user's whole role
set together with each role's verdict alone, so an admin sees which role allowed, which deny
rule or condition refused, and whether per-session MFA would be required. Locks are not policy:
the domain layer (``auth/access_explain.py``) adds the lock that applies.

Back ends of ``bctl access check|ls|who`` and ``GET /v1/access/...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.rbac.checker import Decision, RoleSet
from bastion.rbac.conditions import AccessContext
from bastion.types.access import Role

__all__ = [
    "Explanation",
    "Grant",
    "RoleFinding",
    "Subject",
    "explain_node_access",
    "reachable",
    "who_can",
]


@dataclass(frozen=True, slots=True)
class Subject:
    """A user as policy sees them: name, roles (resolved) and traits."""

    name: str
    roles: tuple[Role, ...]
    traits: Mapping[str, Sequence[str]]

    def context(
        self, *, time: datetime | None, source_ip: str = "", mfa_verified: bool = False
    ) -> AccessContext:
        return AccessContext(
            user=self.name,
            roles=tuple(r.metadata.name for r in self.roles),
            traits={k: list(v) for k, v in self.traits.items()},
            source_ip=source_ip,
            time=time,
            mfa_verified=mfa_verified,
        )


@dataclass(frozen=True, slots=True)
class RoleFinding:
    """One role's verdict on the question, as if it were the user's only role."""

    role: str
    verdict: str
    """``allows``, ``denies`` or ``does not grant``."""
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision (the checker's) and each role's part in it."""

    user: str
    node: str
    login: str
    decision: Decision
    roles: tuple[RoleFinding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "node": self.node,
            "login": self.login,
            "allowed": self.decision.allowed,
            "reason": self.decision.reason,
            "role": self.decision.role or "",
            "mfa_required": self.decision.mfa_required,
            "device_required": False,
            "roles": [
                {"role": f.role, "verdict": f.verdict, "reason": f.reason} for f in self.roles
            ],
        }


@dataclass(frozen=True, slots=True)
class Grant:
    """One reachable (user, node, login), and the role that grants it."""

    user: str
    node: str
    login: str
    role: str
    mfa_required: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "node": self.node,
            "login": self.login,
            "role": self.role,
            "mfa_required": self.mfa_required,
        }


def _finding(role: Role, single: Decision) -> RoleFinding:
    name = role.metadata.name
    if single.allowed:
        return RoleFinding(name, "allows", single.reason)
    if single.role == name:  # a role alone only names itself when it denies
        return RoleFinding(name, "denies", single.reason)
    return RoleFinding(name, "does not grant", single.reason)


def explain_node_access(
    subject: Subject,
    node_name: str,
    node_labels: Mapping[str, str],
    login: str,
    *,
    context: AccessContext,
    cluster_requires_mfa: bool = False,
) -> Explanation:
    """May ``subject`` log in as ``login`` on the node, and why (every role's part).

    Returns:
        The explanation; ``decision`` is exactly what the proxy and node would decide for the
        same roles, traits and request context.
    """
    role_set = RoleSet.from_roles(subject.roles, subject.traits)
    decision = role_set.check_node_access(
        node_name, node_labels, login, cluster_requires_mfa=cluster_requires_mfa, context=context
    )
    findings = []
    for role in subject.roles:
        alone = RoleSet.from_roles([role], subject.traits)
        single = alone.check_node_access(
            node_name,
            node_labels,
            login,
            cluster_requires_mfa=cluster_requires_mfa,
            context=context,
        )
        findings.append(_finding(role, single))
    return Explanation(subject.name, node_name, login, decision, tuple(findings))


def _candidate_logins(role_set: RoleSet, labels: Mapping[str, str]) -> list[str]:
    out: dict[str, None] = {}
    for role in role_set.roles:
        if role.allow.logins and role.allow.node.matches(labels):
            out.update(dict.fromkeys(role.allow.logins))
    return list(out)


def reachable(
    subject: Subject,
    nodes: Iterable[tuple[str, Mapping[str, str]]],
    *,
    context: AccessContext,
    cluster_requires_mfa: bool = False,
) -> list[Grant]:
    """Every (node, login) the subject may reach, in node order then role login order.

    Args:
        subject: the user.
        nodes: ``(name, labels)`` of every node.
        context: the request the answer assumes (time, source IP, MFA).
        cluster_requires_mfa: the auth preference's ``require_session_mfa``.
    """
    role_set = RoleSet.from_roles(subject.roles, subject.traits)
    grants: list[Grant] = []
    for name, labels in nodes:
        if not role_set.check_node_visible(name, labels, context=context).allowed:
            continue
        # Only a login of a role whose selector matches can be allowed: ask about those alone
        # (the checker still decides each one, deny rules and conditions included).
        for login in _candidate_logins(role_set, labels):
            decision = role_set.check_node_access(
                name, labels, login, cluster_requires_mfa=cluster_requires_mfa, context=context
            )
            if decision.allowed:
                grants.append(
                    Grant(subject.name, name, login, decision.role or "", decision.mfa_required)
                )
    return grants


def who_can(
    subjects: Iterable[Subject],
    nodes: Sequence[tuple[str, Mapping[str, str]]],
    login: str,
    *,
    time: datetime | None,
    source_ip: str = "",
    mfa_verified: bool = False,
    cluster_requires_mfa: bool = False,
) -> list[Grant]:
    """The users who may log in as ``login`` on each of ``nodes``, user by user.

    Each user's role set and request context are built once for all the nodes, so a sweep
    evaluates a resource-independent condition once per user.

    Args:
        subjects: the users.
        nodes: ``(name, labels)`` of the nodes asked about (one for ``bctl access who``).
        login: the OS login.
        time: the request time in the cluster's zone.
        source_ip: the client address conditions should see.
        mfa_verified: whether conditions should see an MFA-verified certificate.
        cluster_requires_mfa: the auth preference's ``require_session_mfa``.
    """
    grants: list[Grant] = []
    for subject in subjects:
        role_set = RoleSet.from_roles(subject.roles, subject.traits)
        context = subject.context(time=time, source_ip=source_ip, mfa_verified=mfa_verified)
        for node_name, node_labels in nodes:
            decision = role_set.check_node_access(
                node_name,
                node_labels,
                login,
                cluster_requires_mfa=cluster_requires_mfa,
                context=context,
            )
            if decision.allowed:
                grants.append(
                    Grant(
                        subject.name, node_name, login, decision.role or "", decision.mfa_required
                    )
                )
    return grants
