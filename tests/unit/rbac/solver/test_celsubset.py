"""The CEL subset parser: precedence, members, calls, refusals."""

from __future__ import annotations

import pytest

from bastion.rbac.solver.celsubset import Binary, Call, Index, Lit, Member, ParseError, Unary, parse


def test_precedence_and_shapes() -> None:
    tree = parse('!a.b || "x" in user.traits.team && resource.labels["env"] == "prod"')
    assert isinstance(tree, Binary) and tree.op == "||"
    assert isinstance(tree.left, Unary)
    right = tree.right
    assert isinstance(right, Binary) and right.op == "&&"
    assert isinstance(right.left, Binary) and right.left.op == "in"
    eq = right.right
    assert isinstance(eq, Binary) and isinstance(eq.left, Index) and eq.right == Lit("prod")


def test_calls_and_members() -> None:
    tree = parse("request.time.getHours() >= 8")
    assert isinstance(tree, Binary) and isinstance(tree.left, Call)
    assert tree.left.name == "getHours" and isinstance(tree.left.target, Member)
    assert parse("has(user.traits.x)") == Call(
        None,
        "has",
        (Member(Member(parse("user"), "traits"), "x"),),  # type: ignore[arg-type]
    )
    assert parse("'a\\n'") == Lit("a\n")


@pytest.mark.parametrize("text", ['b"x"', "1.5 > 1", "a ==", "{1: 2}", "r'x'"])
def test_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)
