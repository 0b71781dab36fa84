"""The encoder: formulas that mirror the checker on hand-picked cases."""

from __future__ import annotations

import z3

from bastion.rbac.solver.encode import Encoder, lit
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.meta import Metadata


def _role(name: str, allow: dict[str, object], deny: dict[str, object] | None = None) -> Role:
    spec = RoleSpec(allow=RoleConditions(**allow), deny=RoleConditions(**(deny or {})))
    return Role(metadata=Metadata(name=name), spec=spec)


def _sat(*formulas: object) -> bool:
    solver = z3.Solver()
    solver.add(*formulas)
    return bool(solver.check() == z3.sat)


def test_literal_with_backslash() -> None:
    assert _sat(
        lit("a\\u{41}") == z3.StringVal("a") + z3.Unit(z3.CharVal(92)) + z3.StringVal("u{41}")
    )


def test_deny_wins_and_template_logins() -> None:
    roles = [
        _role("dev", {"logins": ["{{internal.logins}}"], "node_labels": {"env": "dev"}}),
        _role("no-root", {}, {"logins": ["root"]}),
    ]
    enc = Encoder(roles)
    allowed, _ = enc.node_access()
    base = [allowed, *enc.finalize()]
    assert _sat(*base, enc.login == z3.StringVal("alice"))
    assert not _sat(*base, enc.login == z3.StringVal("root"), enc.has_role["no-root"])


def test_conditional_deny_applies_on_error() -> None:
    roles = [
        _role(
            "r",
            {"logins": ["x"], "node_labels": {"*": "*"}},
            {"node_labels": {"*": "*"}, "where": 'resource.labels.env == "prod"'},
        )
    ]
    enc = Encoder(roles)
    allowed, _ = enc.node_access()
    present, _value = enc.label("env")
    # env missing: the deny condition errors, so it applies: never allowed without env.
    assert not _sat(allowed, z3.Not(present), *enc.finalize())


def test_unsupported_regex_is_havoc_with_reason() -> None:
    enc = Encoder([_role("r", {"logins": ["x"], "node_labels": {"env": "^(?=a)a$"}})])
    enc.node_access()
    assert enc.unknowns and "regular expression" in enc.unknowns[0]
