"""Moderated sessions and session join: who may join which session how, and whether it may run.

Layer: policy (pure). Values in, values out; the node agent (:mod:`bastion.agent.session_join`)
and auth's session list (:mod:`bastion.auth.sessions`) act on the answers. The role fields are
:class:`~bastion.types.sessions.SessionRequirePolicy` (``options.require_session_join``, on the
session owner's roles) and :class:`~bastion.types.sessions.JoinSessionsRule`
(``allow``/``deny.join_sessions``, on the joiner's roles).

The rules (after Teleport's session access evaluator):

* **Joining**: a user may join a session in a mode when one of their roles' ``allow.
  join_sessions`` rules names one of the owner's roles (or ``*``), the session's kind and the
  mode, and no ``deny.join_sessions`` rule of theirs names them. Deny wins. Nobody joins their
  own session. A role side with a ``where`` condition is not evaluated for joins: such an allow
  grants nothing and such a deny denies (fail closed).
* **Running**: every owner role that has policies for the session's kind must have one policy
  met: ``count`` participants other than the owner, in one of the policy's ``modes``, matching
  its ``filter``. A filter that cannot be evaluated does not match.
* **Leaving**: when the policies stop being met, the session pauses, or terminates when any
  unmet role has a policy with ``on_leave: terminate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bastion.rbac.checker import Decision
from bastion.types.access import Role, RoleConditions
from bastion.types.sessions import (
    JOIN_MODES,
    JoinMode,
    ParticipantMode,
    SessionKind,
    SessionRequirePolicy,
    compile_session_filter,
)

__all__ = [
    "Fulfilment",
    "LeaveAction",
    "Participant",
    "PolicySet",
    "check_join",
    "fulfilment",
    "join_modes",
    "leave_action",
    "policy_sets",
]

LeaveAction = Literal["continue", "pause", "terminate"]


@dataclass(frozen=True, slots=True)
class Participant:
    """Someone in a session, as the policies see them."""

    user: str
    mode: ParticipantMode
    roles: tuple[str, ...] = ()
    traits: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """One owner role's policies for one kind of session."""

    role: str
    policies: tuple[SessionRequirePolicy, ...]


@dataclass(frozen=True, slots=True)
class Fulfilment:
    met: bool
    waiting_for: tuple[str, ...] = ()
    """One line per unmet role: who must still join."""
    on_leave: Literal["pause", "terminate"] = "terminate"
    """What to do when a running session is no longer met."""


def policy_sets(
    roles: Iterable[tuple[str, Sequence[SessionRequirePolicy]]], kind: SessionKind
) -> tuple[PolicySet, ...]:
    """The owner's roles that constrain sessions of ``kind``.

    Args:
        roles: ``(role name, its require_session_join)`` for each role of the session owner.
        kind: the session's kind.

    Returns:
        One set per role with at least one policy for ``kind``; empty: the session is not
        moderated.
    """
    out = []
    for name, policies in roles:
        matching = tuple(p for p in policies if kind in p.kinds)
        if matching:
            out.append(PolicySet(name, matching))
    return tuple(out)


def _filter_matches(policy: SessionRequirePolicy, who: Participant) -> bool:
    if not policy.filter:
        return True
    user = {
        "name": who.user,
        "roles": list(who.roles),
        "traits": {k: list(v) for k, v in who.traits.items()},
    }
    try:
        result = compile_session_filter(policy.filter).execute({"user": user})
    except Exception:  # noqa: BLE001 - a filter that cannot be evaluated does not match
        return False
    return result is True


def _count(policy: SessionRequirePolicy, participants: Sequence[Participant], owner: str) -> int:
    return sum(
        1
        for p in participants
        if p.user != owner
        and p.mode != "owner"
        and p.mode in policy.modes
        and _filter_matches(policy, p)
    )


def _describe(policy_set: PolicySet, participants: Sequence[Participant], owner: str) -> str:
    wants = []
    for policy in policy_set.policies:
        have = _count(policy, participants, owner)
        modes = "/".join(policy.modes)
        who = f" matching {policy.filter}" if policy.filter else ""
        wants.append(f"{policy.count - have} more {modes}{who}")
    return f"role {policy_set.role}: " + " or ".join(wants)


def fulfilment(
    sets: Sequence[PolicySet], participants: Sequence[Participant], owner: str
) -> Fulfilment:
    """Whether a session with these participants may run.

    Args:
        sets: the owner's policy sets (:func:`policy_sets`).
        participants: everyone in the session (the owner included or not).
        owner: the session owner's user name; never counts toward a policy.

    Returns:
        ``met`` when every set has a policy with enough matching participants; otherwise
        who is still missing and what a running session does about it.
    """
    waiting: list[str] = []
    terminate = False
    for policy_set in sets:
        if any(_count(p, participants, owner) >= p.count for p in policy_set.policies):
            continue
        waiting.append(_describe(policy_set, participants, owner))
        terminate = terminate or any(p.on_leave == "terminate" for p in policy_set.policies)
    if not waiting:
        return Fulfilment(True)
    return Fulfilment(False, tuple(waiting), "terminate" if terminate else "pause")


def leave_action(
    sets: Sequence[PolicySet], remaining: Sequence[Participant], owner: str
) -> LeaveAction:
    """What a running session does after someone left.

    Returns:
        ``continue`` when the remaining participants still meet the policies, else the
        ``on_leave`` of the unmet ones (``terminate`` wins over ``pause``).
    """
    state = fulfilment(sets, remaining, owner)
    return "continue" if state.met else state.on_leave


def _rule_modes(
    side: RoleConditions, owner_roles: frozenset[str], kind: SessionKind
) -> set[JoinMode]:
    modes: set[JoinMode] = set()
    for rule in side.join_sessions:
        if kind in rule.kinds and ("*" in rule.roles or owner_roles.intersection(rule.roles)):
            modes.update(rule.modes)
    return modes


def join_modes(
    joiner: str,
    joiner_roles: Sequence[Role],
    owner: str,
    owner_roles: Sequence[str],
    kind: SessionKind,
) -> frozenset[JoinMode]:
    """The modes in which ``joiner`` may join a session of ``owner``.

    Args:
        joiner: the joining user.
        joiner_roles: their roles (current definitions).
        owner: the session owner.
        owner_roles: the owner's role names (from the session's certificate).
        kind: the session's kind.

    Returns:
        The allowed modes; empty for the owner themself and for anyone no rule allows.
    """
    if joiner == owner:
        return frozenset()
    owned = frozenset(owner_roles)
    allowed: set[JoinMode] = set()
    denied: set[JoinMode] = set()
    for role in joiner_roles:
        allow, deny = role.spec.allow, role.spec.deny
        if not allow.where:
            allowed |= _rule_modes(allow, owned, kind)
        denied |= _rule_modes(deny, owned, kind)
        if deny.where and deny.join_sessions:
            denied |= set(JOIN_MODES)  # a conditional deny is not evaluated: it denies
    return frozenset(allowed - denied)


def check_join(
    joiner: str,
    joiner_roles: Sequence[Role],
    owner: str,
    owner_roles: Sequence[str],
    kind: SessionKind,
    mode: JoinMode,
) -> Decision:
    """May ``joiner`` join ``owner``'s session in ``mode``? (:func:`join_modes`, explained.)"""
    if joiner == owner:
        return Decision(False, "you cannot join your own session")
    modes = join_modes(joiner, joiner_roles, owner, owner_roles, kind)
    if mode in modes:
        return Decision(True, f"{joiner} may join sessions of {owner} as {mode}")
    if modes:
        allowed = ", ".join(m for m in JOIN_MODES if m in modes)
        return Decision(False, f"{joiner} may join this session only as {allowed}, not {mode}")
    return Decision(False, f"no role of {joiner} allows joining sessions of {owner}")
