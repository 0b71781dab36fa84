"""Trait templates: every syntactic form, every kind of bad template, and expansion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.types.templates import (
    INTERNAL_TRAITS,
    EmailLocal,
    RegexpReplace,
    Template,
    expand_values,
    parse_template,
)

TRAITS = {
    "logins": ["alice", "root"],
    "db_users": ["reader"],
    "db_names": ["orders", "users"],
    "team": ["dev", "ops"],
    "email": ["alice@example.com", "bob@other.org", "not-an-email"],
    "a.b": ["dotted"],
    "empty": [],
    "blank": [""],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu", ["ubuntu"]),
        ("", [""]),
        ("{{internal.logins}}", ["alice", "root"]),
        ("{{ internal.logins }}", ["alice", "root"]),
        ("{{internal.db_users}}", ["reader"]),
        ("{{internal.db_names}}", ["orders", "users"]),
        ('{{internal["logins"]}}', ["alice", "root"]),
        ("{{external.team}}", ["dev", "ops"]),
        ('{{external["a.b"]}}', ["dotted"]),
        ("{{ email.local( external.email ) }}", ["alice", "bob"]),
        ("{{external[`a.b`]}}", ["dotted"]),
        ("{{internal.logins}}-admin", ["alice-admin", "root-admin"]),
        ("dev-{{external.team}}", ["dev-dev", "dev-ops"]),
        ("pre-{{external.team}}-post", ["pre-dev-post", "pre-ops-post"]),
        ("{{email.local(external.email)}}", ["alice", "bob"]),
        ('{{email.local(external["email"])}}', ["alice", "bob"]),
        ('{{regexp.replace(external.email, "^(.*)@example\\.com$", "$1")}}', ["alice"]),
        ('{{regexp.replace(external.email, "^(.*)@example\\\\.com$", "${1}")}}', ["alice"]),
        ('{{regexp.replace(external.email, "^(?P<u>[^@]+)@.*$", "u-${u}")}}', ["u-alice", "u-bob"]),
        ('{{regexp.replace(external.team, "o", "0")}}', ["0ps"]),
        ('{{regexp.replace(external.team, "^(d)(e)v$", "$2$1-$$")}}', ["ed-$"]),
        ('{{regexp.replace(external.team, "v", "")}}', ["de"]),
        ('{{regexp.replace(external.team, "^dev$", "")}}', []),
        ("{{external.missing}}", []),
        ("{{external.empty}}", []),
        ("{{external.blank}}", []),
        ("x-{{external.blank}}", []),
    ],
)
def test_expand(text: str, expected: list[str]) -> None:
    assert parse_template(text).expand(TRAITS) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{{internal.logins", "missing }}"),
        ("internal.logins}}", "missing {{"),
        ("}}internal.logins{{", "}} before {{"),
        ("{{internal.logins}}{{external.team}}", "at most one"),
        ("{{{{internal.logins}}}}", "at most one"),
        ("{{}}", "empty expression"),
        ("{{   }}", "empty expression"),
        ("{{foo.bar}}", "unknown namespace 'foo'"),
        ("{{logins}}", "unknown namespace 'logins'"),
        ("{{internal.nope}}", "unknown internal trait 'nope'"),
        ("{{internal}}", "expression ends early"),
        ("{{internal.}}", "expected a trait name"),
        ("{{internal:logins}}", "unexpected ':'"),
        ("{{internal.logins.x}}", "unexpected '.' after the expression"),
        ("{{external[team]}}", 'expected a "quoted" trait name'),
        ('{{external[""]}}', "empty trait name"),
        ('{{external["team"}}', "ends early"),
        ("{{external.team extra}}", "unexpected 'extra'"),
        ("{{email.remote(external.email)}}", "unknown function email.remote"),
        ("{{email(external.email)}}", "expected '.'"),
        ("{{email.local(external.email}}", "ends early"),
        ("{{email.local()}}", "expected a variable"),
        ('{{email.local("x")}}', "expected a variable"),
        ("{{email.local(foo.bar)}}", "takes a variable"),
        ('{{email.local(external.email, "x")}}', "exactly one argument"),
        ("{{regexp.replace(external.team)}}", "got 1 arguments"),
        ('{{regexp.replace(external.team, "a")}}', "got 2 arguments"),
        ('{{regexp.replace(external.team, "(", "x")}}', "invalid regexp '('"),
        ('{{regexp.replace(external.team, "[a-", "x")}}', "invalid regexp '[a-'"),
        ('{{regexp.replace(external.team, "a", "$1")}}', "refers to $1"),
        ('{{regexp.replace(external.team, "(a)", "${x}")}}', "unknown group ${x}"),
        ('{{regexp.replace(external.team, "(a)", "$1x")}}', "unknown group ${1x}"),
        ("{{regexp.replace(external.team, 'a', 'b')}}", 'unexpected "\'"'),
        ('{{regexp.replace(external.team, "a", "b"}}', "ends early"),
        ("{{regexp.match(external.team)}}", "unknown function regexp.match"),
    ],
)
def test_bad_templates(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_template(text)
    message = str(info.value)
    assert message.startswith(f'invalid template "{text}": ')
    assert problem in message


def test_parse_structure_and_cache() -> None:
    template = parse_template('a{{regexp.replace(external.x, "^(.)", "$1")}}b')
    assert (template.prefix, template.suffix, template.namespace, template.trait) == (
        "a",
        "b",
        "external",
        "x",
    )
    assert isinstance(template.transform, RegexpReplace)
    assert template.transform.replacement == (1,)
    assert parse_template("{{internal.logins}}") is parse_template("{{internal.logins}}")
    assert parse_template("plain") == Template(text="plain")
    assert parse_template("plain").is_literal
    assert isinstance(parse_template("{{email.local(internal.logins)}}").transform, EmailLocal)


def test_every_internal_trait_parses() -> None:
    for name in INTERNAL_TRAITS:
        assert parse_template(f"{{{{internal.{name}}}}}").trait == name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.c", "a"),
        ("a.b+c@d", "a.b+c"),
        ("x@y@z", "x@y"),
        ("@d", None),
        ("a@", None),
        ("a", None),
    ],
)
def test_email_local(value: str, expected: str | None) -> None:
    assert EmailLocal().apply(value) == expected


def test_expand_values_dedupes_and_passes_literals() -> None:
    values = ["root", "{{internal.logins}}", "alice", "{{external.missing}}", "{{internal.logins}}"]
    assert expand_values(values, TRAITS) == ["root", "alice"]
    assert expand_values(["^web-.*$", "*"], TRAITS) == ["^web-.*$", "*"]
    assert expand_values([], TRAITS) == []


def test_expand_values_rejects_bad_template() -> None:
    with pytest.raises(ValueError, match="missing }}"):
        expand_values(["{{internal.logins"], TRAITS)


_no_braces = st.text().filter(lambda s: "{{" not in s and "}}" not in s)
_affix = st.text(alphabet="abc-_.", max_size=5)


@given(_no_braces)
def test_literal_values_round_trip(text: str) -> None:
    template = parse_template(text)
    assert template.is_literal
    assert template.expand(TRAITS) == [text]
    assert expand_values([text], {}) == [text]


@given(_affix, _affix, st.lists(st.text(max_size=8)))
def test_expansion_wraps_every_nonempty_value(prefix: str, suffix: str, values: list[str]) -> None:
    template = parse_template(f"{prefix}{{{{external.t}}}}{suffix}")
    expected = list(dict.fromkeys(f"{prefix}{v}{suffix}" for v in values if v))
    assert template.expand({"t": values}) == expected
    assert template.expand({}) == []
