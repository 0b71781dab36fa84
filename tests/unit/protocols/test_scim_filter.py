"""SCIM filters: the supported subset parses and matches; anything else is one FilterError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.protocols.scim_filter import (
    And,
    Compare,
    Filter,
    FilterError,
    Not,
    Or,
    Present,
    matches,
    parse_filter,
    render,
)

USER = {
    "userName": "BJensen",
    "id": "abc",
    "active": True,
    "emails": [{"value": "bj@example.com", "primary": True}],
    "name": {"givenName": "Barbara"},
    "groups": [{"value": "g1", "display": "admins"}],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "bjensen"', True),  # userName is not case-exact
        ('USERNAME Eq "bjensen"', True),  # nor are attribute names and operators
        ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen"', True),
        ('id eq "ABC"', False),  # id is case-exact
        ('userName sw "bj" and active eq true', True),
        ('userName eq "x" or emails.value co "@example"', True),
        ("not (active eq true)", False),
        ("name.givenName pr", True),
        ("title pr", False),
        ('emails eq "bj@example.com"', True),
        ('groups.display eq "admins"', True),
        ('userName ne "bjensen"', False),
        ("active eq null", False),
        ("title eq null", True),
    ],
)
def test_examples(text: str, expected: bool) -> None:
    assert matches(parse_filter(text), USER) is expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "userName",
        "userName eq",
        'userName xx "a"',
        'emails[type eq "work"]',
        '(userName eq "a"',
        'userName eq "a")',
        'userName eq "a" and',
        "not userName eq 1",
        'userName eq "unterminated',
        "userName eq 1e999",
        "a" * 3000,
        "(" * 40 + "a eq 1" + ")" * 40,
    ],
)
def test_bad_filters_are_filter_errors(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def _parses_or_fails_cleanly(text: str) -> None:
    try:
        node = parse_filter(text)
    except FilterError:
        return
    assert parse_filter(render(node)) == node
    matches(node, USER)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_filter_error(text: str) -> None:
    _parses_or_fails_cleanly(text)


ALPHABET = st.sampled_from(list('abcdeqorntpuwglsx ()"[].:\\-01 '))
TOKENS = st.sampled_from(
    ["userName", "eq", "ne", "co", "pr", "and", "or", "not", "(", ")", '"x"', "1", "true",
     "null", "[", "]", "emails.value", "urn:a:b"]
)  # fmt: skip


@given(st.lists(TOKENS, max_size=12).map(" ".join))
def test_token_soup_parses_or_is_a_filter_error(text: str) -> None:
    _parses_or_fails_cleanly(text)


@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_character_soup_parses_or_is_a_filter_error(text: str) -> None:
    _parses_or_fails_cleanly(text)


NAMES = st.sampled_from(["userName", "displayName", "emails.value", "id", "active", "x1"])
VALUES = st.one_of(
    st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)  # fmt: skip
OPS = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
LEAVES = st.one_of(st.builds(Compare, NAMES, OPS, VALUES), st.builds(Present, NAMES))
FILTERS: st.SearchStrategy[Filter] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)
    ),
    max_leaves=8,
)


@given(FILTERS)
def test_render_then_parse_is_the_identity(node: Filter) -> None:
    assert parse_filter(render(node)) == node


@given(FILTERS, st.text(max_size=10), st.booleans())
def test_not_inverts_and_de_morgan_holds(node: Filter, name: str, active: bool) -> None:
    doc = {"userName": name, "active": active, "id": name, "emails": [{"value": name}]}
    assert matches(Not(node), doc) is not matches(node, doc)
    other = Compare("active", "eq", True)
    assert matches(Not(And(node, other)), doc) == matches(Or(Not(node), Not(other)), doc)
