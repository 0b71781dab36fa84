"""The ``where`` language: what compiles, what is refused and why, and the compile cache."""

from __future__ import annotations

import pytest

from bastion.types.conditions import (
    MAX_CONDITION_LENGTH,
    check_condition,
    compile_condition,
)


@pytest.mark.parametrize(
    ("text", "uses_resource"),
    [
        ('request.time.getHours() >= 8 && "oncall" in user.traits.groups', False),
        ('user.name.startsWith("al") || size(user.roles) > 2', False),
        ('has(user.traits.team) && user.traits.team.exists(t, t == "dba")', False),
        ('resource.labels.env == "prod" && resource.kind == "node"', True),
        ('request.source_ip.startsWith("10.") && !request.mfa_verified', False),
        ("device.trusted || device.os == 'linux'", False),
        ('"user.nme" == "x" || true', False),  # names inside strings are not checked
    ],
)
def test_valid_conditions(text: str, uses_resource: bool) -> None:
    assert check_condition(text) == text
    assert compile_condition(text).uses_resource is uses_resource


def test_compiled_once_per_text() -> None:
    text = 'user.name == "once"'
    assert compile_condition(text) is compile_condition(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty condition"),
        ("x" * (MAX_CONDITION_LENGTH + 1), "at most 1000"),
        ("user.traits.", "syntax error"),
        ("resource.label.env == 'x'", "unknown field resource.label"),
        ("request.ip == '1'", "unknown field request.ip"),
        ("now > 1", "unknown variable 'now'"),
        ("request.time + 1 == 2", "type error"),
        ("size(user.roles)", "true or false"),
        ("user.name.nosuch('x')", "invalid condition"),
    ],
)
def test_refused_conditions(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_condition(text)
