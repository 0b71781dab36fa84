"""Answering assertions about a role set: holds, a replayed counterexample, or unknown.

Layer: policy (pure). For each assertion the role set is encoded
(:class:`~bastion.rbac.solver.encode.Encoder`) and Z3 looks for a violation: a user (roles,
traits, name), a node (name, labels), a login and a request (MFA verified, source IP, time)
in the assertion's scope for which the checker allows what the assertion forbids.

* **No violation** (unsat): the assertion holds for every user, node, login and request. The
  encoding over-approximates what it cannot express, so this is a proof.
* **A violation**: the user and node are replayed through the real checker
  (:meth:`~bastion.rbac.checker.RoleSet.check_node_access`); only a confirmed one is reported,
  with the checker's own reason. If the search relied on a construct outside the fragment and
  the replay does not confirm it, the search is repeated without the guarded constructs (trait
  values that are regular expressions); failing that, the answer is **unknown** with the
  constructs named. Never a false "holds", never an unconfirmed counterexample.
* Z3's own "unknown" (timeout) is reported as unknown.

Requests are assumed to carry a time (every proxied connection does).
"""

from __future__ import annotations

import time as clock
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import z3

from bastion.rbac.checker import Decision, RoleSet
from bastion.rbac.conditions import AccessContext
from bastion.rbac.solver.assertions import Assertion, UserScope
from bastion.rbac.solver.encode import Encoder, lit
from bastion.types.access import Role

__all__ = ["Counterexample", "Result", "replay", "verify", "verify_one"]

_SUNDAY = datetime(2026, 1, 4, tzinfo=UTC)
_PRINTABLE = z3.Range(" ", "~")
_READABLE_MS = 1000
"""How long to look for a counterexample with short printable strings before taking any."""


@dataclass(frozen=True, slots=True)
class Counterexample:
    """A concrete access that breaks an assertion, as the real checker decided it."""

    user: str
    roles: tuple[str, ...]
    traits: dict[str, list[str]]
    node: str
    labels: dict[str, str]
    login: str
    mfa_verified: bool = False
    source_ip: str = ""
    time: datetime = field(default=_SUNDAY.replace(day=5, hour=12))
    decision: Decision | None = None

    def context(self) -> AccessContext:
        return AccessContext(
            user=self.user,
            roles=self.roles,
            traits={k: list(v) for k, v in self.traits.items()},
            source_ip=self.source_ip,
            time=self.time,
            mfa_verified=self.mfa_verified,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": {"name": self.user, "roles": list(self.roles), "traits": self.traits},
            "node": {"name": self.node, "labels": self.labels},
            "login": self.login,
            "request": {
                "mfa_verified": self.mfa_verified,
                "source_ip": self.source_ip,
                "time": self.time.isoformat(),
            },
            "decision": {
                "allowed": self.decision.allowed if self.decision else None,
                "mfa_required": self.decision.mfa_required if self.decision else None,
                "reason": self.decision.reason if self.decision else "",
            },
        }


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: Literal["holds", "fails", "unknown"]
    reason: str
    counterexample: Counterexample | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "reason": self.reason}
        if self.counterexample is not None:
            out["counterexample"] = self.counterexample.to_dict()
        out["seconds"] = round(self.seconds, 4)
        return out


def _equals(wanted: Any) -> Callable[[Any], Any]:
    return lambda witness: witness == wanted


def _user_formula(enc: Encoder, scope: UserScope) -> Any:
    parts: list[Any] = []
    if scope.name is not None:
        parts.append(enc.user_name == lit(scope.name))
    for name in scope.roles:
        parts.append(enc.has_role[name])
    if not scope.other_roles:
        parts += [z3.Not(held) for name, held in enc.has_role.items() if name not in scope.roles]
    for trait, values in scope.traits.items():
        for value in values:
            wanted = lit(value)
            parts.append(enc.trait_atom(trait, ("in", str(wanted)), _equals(wanted)))
    return z3.And(parts) if parts else z3.BoolVal(True)


def _user_matches(
    scope: UserScope, name: str, roles: Sequence[str], traits: Mapping[str, Sequence[str]]
) -> bool:
    if scope.name is not None and name != scope.name:
        return False
    if not set(scope.roles) <= set(roles):
        return False
    if not scope.other_roles and set(roles) != set(scope.roles):
        return False
    return all(v in traits.get(k, ()) for k, vs in scope.traits.items() for v in vs)


def _scope_formula(enc: Encoder, assertion: Assertion) -> Any:
    parts = [_user_formula(enc, assertion.user)]
    if assertion.resource.name is not None:
        parts.append(enc.node_name == lit(assertion.resource.name))
    for key, values in assertion.resource.labels.items():
        present, value = enc.label(key)
        parts.append(z3.And(present, z3.Or([value == lit(v) for v in values])))
    if assertion.login:
        parts.append(z3.Or([enc.login == lit(v) for v in assertion.login]))
    return z3.And(parts)


def _in_scope(assertion: Assertion, cx: Counterexample) -> bool:
    res = assertion.resource
    return (
        _user_matches(assertion.user, cx.user, cx.roles, cx.traits)
        and (res.name is None or cx.node == res.name)
        and all(cx.labels.get(k) in vs for k, vs in res.labels.items())
        and (not assertion.login or cx.login in assertion.login)
    )


def _violates(assertion: Assertion, cx: Counterexample, decision: Decision) -> bool:
    if not decision.allowed:
        return False
    if assertion.expect == "session_mfa":
        return not decision.mfa_required
    if assertion.expect == "only":
        assert assertion.only is not None
        return not _user_matches(assertion.only, cx.user, cx.roles, cx.traits)
    return True


def replay(
    roles: Sequence[Role], cx: Counterexample, *, cluster_requires_mfa: bool = False
) -> Decision | None:
    """The real checker's decision for the counterexample; None if the checker cannot build
    the role set (a trait value that is an invalid regular expression)."""
    held = [r for r in roles if r.metadata.name in cx.roles]
    try:
        role_set = RoleSet.from_roles(held, cx.traits)
    except ValueError:
        return None
    return role_set.check_node_access(
        cx.node,
        cx.labels,
        cx.login,
        cluster_requires_mfa=cluster_requires_mfa,
        context=cx.context(),
    )


def _string(model: Any, value: Any) -> str:
    length = model.eval(z3.Length(value), model_completion=True).as_long()
    codes = [
        model.eval(z3.StrToCode(z3.SubString(value, i, 1)), model_completion=True).as_long()
        for i in range(length)
    ]
    return "".join(chr(c) for c in codes)


def _true(model: Any, value: Any) -> bool:
    return bool(z3.is_true(model.eval(value, model_completion=True)))


def _extract(enc: Encoder, model: Any) -> Counterexample:
    traits: dict[str, list[str]] = {}
    for name, trait in enc.traits.items():
        if _true(model, trait.present):
            values = [_string(model, v) for used, v in trait.slots if _true(model, used)]
            traits[name] = list(dict.fromkeys(values))
    labels = {
        key: _string(model, value)
        for key, (present, value) in enc.labels.items()
        if _true(model, present)
    }
    parts = {m: model.eval(v, model_completion=True).as_long() for m, v in enc.time.items()}
    moment = _SUNDAY.replace(
        day=_SUNDAY.day + parts.get("getDayOfWeek", 1),
        hour=parts.get("getHours", 12),
        minute=parts.get("getMinutes", 0),
    )
    return Counterexample(
        user=_string(model, enc.user_name),
        roles=tuple(n for n, held in enc.has_role.items() if _true(model, held)),
        traits=traits,
        node=_string(model, enc.node_name),
        labels=labels,
        login=_string(model, enc.login),
        mfa_verified=_true(model, enc.mfa_verified),
        source_ip=_string(model, enc.source_ip),
        time=moment,
    )


def _readable(enc: Encoder, chars: Any) -> Any:
    """Prefer short strings of ``chars`` (and a non-empty name) in counterexamples."""
    nice = [z3.And(z3.InRe(s, z3.Star(chars)), z3.Length(s) <= 24) for s in enc.strings]
    return z3.And(*nice, z3.Length(enc.user_name) > 0, z3.Length(enc.node_name) > 0)


def _search(
    solver: Any,
    enc: Encoder,
    roles: Sequence[Role],
    assertion: Assertion,
    mfa: bool,
    timeout_ms: int,
) -> tuple[str, Counterexample | None]:
    """``sat`` with a confirmed counterexample, ``unsat``, ``unknown`` or ``unconfirmed``."""
    answer = solver.check()
    if answer == z3.unsat:
        return "unsat", None
    if answer != z3.sat:
        return "unknown", None
    model = solver.model()
    solver.set("timeout", _READABLE_MS)
    for chars in (_PRINTABLE,):
        solver.push()
        solver.add(_readable(enc, chars))
        found = solver.check() == z3.sat
        if found:
            model = solver.model()
        solver.pop()
        if found:
            break
    solver.set("timeout", timeout_ms)
    cx = _extract(enc, model)
    decision = replay(roles, cx, cluster_requires_mfa=mfa)
    if decision is not None and _in_scope(assertion, cx) and _violates(assertion, cx, decision):
        return "sat", Counterexample(**{**_fields(cx), "decision": decision})
    return "unconfirmed", None


def _fields(cx: Counterexample) -> dict[str, Any]:
    return {name: getattr(cx, name) for name in cx.__dataclass_fields__}


def _violation(enc: Encoder, assertion: Assertion, mfa: bool) -> Any:
    allowed, mfa_required = enc.node_access(cluster_requires_mfa=mfa)
    if assertion.expect == "session_mfa":
        return z3.And(allowed, z3.Not(mfa_required))
    if assertion.expect == "only":
        assert assertion.only is not None
        return z3.And(allowed, z3.Not(_user_formula(enc, assertion.only)))
    return allowed


def verify_one(
    roles: Sequence[Role],
    assertion: Assertion,
    *,
    cluster_requires_mfa: bool = False,
    timeout_ms: int = 30_000,
) -> Result:
    """Answer one assertion over ``roles`` (the whole role set users may hold)."""
    started = clock.perf_counter()
    known = {r.metadata.name for r in roles}
    named = set(assertion.user.roles) | set(assertion.only.roles if assertion.only else ())
    missing = sorted(named - known)
    if missing:
        return Result(
            assertion.name, "unknown", f"no role named {', '.join(missing)} in the role set"
        )
    enc = Encoder(roles)
    goal = z3.And(_scope_formula(enc, assertion), _violation(enc, assertion, cluster_requires_mfa))
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(goal, *enc.finalize())
    outcome, cx = _search(solver, enc, roles, assertion, cluster_requires_mfa, timeout_ms)
    if outcome == "unconfirmed" and enc.guards:
        solver.add(*[z3.Not(g) for g in enc.guards])
        outcome, cx = _search(solver, enc, roles, assertion, cluster_requires_mfa, timeout_ms)
        if outcome == "unsat":
            outcome = "unconfirmed"
    seconds = clock.perf_counter() - started
    if outcome == "unsat":
        return Result(
            assertion.name, "holds", "holds for every user, node, login and request", None, seconds
        )
    if outcome == "sat":
        return Result(assertion.name, "fails", _broken(assertion), cx, seconds)
    if outcome == "unknown":
        why = f"the solver gave up ({solver.reason_unknown()})"
    else:
        why = "; ".join(enc.unknowns) or "a violation found by the solver did not replay"
        why = f"outside the encoded fragment: {why}"
    return Result(assertion.name, "unknown", why, None, seconds)


def _broken(assertion: Assertion) -> str:
    return {
        "unreachable": "reachable",
        "session_mfa": "reachable without per-session MFA",
        "only": "reachable by a user outside 'only'",
    }[assertion.expect]


def verify(
    roles: Sequence[Role],
    assertions: Sequence[Assertion],
    *,
    cluster_requires_mfa: bool = False,
    timeout_ms: int = 30_000,
) -> list[Result]:
    """Answer every assertion (see :func:`verify_one`), in order."""
    return [
        verify_one(roles, a, cluster_requires_mfa=cluster_requires_mfa, timeout_ms=timeout_ms)
        for a in assertions
    ]
