"""Label selectors: every matcher form, the explanations, and a few properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.rbac.labels import (
    LabelSelector,
    ValueMatcher,
    compile_regex,
    is_regex,
    match_labels,
)

PROD = {"env": "prod", "team": "web", "region": "eu-west-1"}


@pytest.mark.parametrize(
    ("selector", "labels", "matched", "reason"),
    [
        # wildcard key and value
        ({"*": ["*"]}, PROD, True, "labels match"),
        ({"*": ["*"]}, {}, True, "labels match"),
        ({"*": ["other", "*"]}, {}, True, "labels match"),
        ({"*": ["*"], "env": ["prod"]}, PROD, True, "labels match"),
        ({"*": ["*"], "env": ["dev"]}, PROD, False, "label env=prod not in [dev]"),
        ({"*": ["prod"]}, PROD, False, "label * missing (wanted [prod])"),
        # empty selector and empty values
        ({}, PROD, False, "no labels selected"),
        ({}, {}, False, "no labels selected"),
        ({"env": []}, PROD, False, "label env selects no values"),
        # value wildcard
        ({"env": ["*"]}, PROD, True, "labels match"),
        ({"env": ["*"]}, {"team": "web"}, False, "label env missing (wanted [*])"),
        ({"env": ["*"]}, {"env": ""}, True, "labels match"),
        # exact
        ({"env": ["prod"]}, PROD, True, "labels match"),
        ({"env": ["staging", "prod"]}, PROD, True, "labels match"),
        ({"env": ["Prod"]}, PROD, False, "label env=prod not in [Prod]"),
        ({"env": ["pro"]}, PROD, False, "label env=prod not in [pro]"),
        ({"env": ["prod"], "team": ["db"]}, PROD, False, "label team=web not in [db]"),
        ({"env": ["prod"], "owner": ["me"]}, PROD, False, "label owner missing (wanted [me])"),
        # plain values are not globs, half-anchored values are not regexes
        ({"region": ["eu-*"]}, PROD, False, "label region=eu-west-1 not in [eu-*]"),
        ({"env": ["^pr"]}, PROD, False, "label env=prod not in [^pr]"),
        ({"env": ["^pr"]}, {"env": "^pr"}, True, "labels match"),
        ({"env": ["od$"]}, PROD, False, "label env=prod not in [od$]"),
        # regex: full match
        ({"region": ["^eu-.*$"]}, PROD, True, "labels match"),
        ({"region": ["^eu-west-[0-9]+$"]}, PROD, True, "labels match"),
        ({"region": ["^eu$"]}, PROD, False, "label region=eu-west-1 not in [^eu$]"),
        ({"env": ["^(dev|staging)$"]}, PROD, False, "label env=prod not in [^(dev|staging)$]"),
        ({"env": ["^(dev|prod)$", "x"]}, PROD, True, "labels match"),
        ({"env": ["^$"]}, {"env": ""}, True, "labels match"),
        ({"env": ["^p$"]}, PROD, False, "label env=prod not in [^p$]"),
        # whole value, not a search: no trailing newline, top-level alternation stays anchored
        ({"env": ["^prod$"]}, {"env": "prod\n"}, False, "not in [^prod$]"),
        ({"env": ["^dev|prod$"]}, {"env": "xprod"}, False, "not in [^dev|prod$]"),
        ({"env": ["^dev|prod$"]}, {"env": "devx"}, False, "not in [^dev|prod$]"),
        ({"env": ["^dev|prod$"]}, {"env": "prod"}, True, "labels match"),
    ],
)
def test_match_labels(
    selector: dict[str, list[str]], labels: dict[str, str], matched: bool, reason: str
) -> None:
    result = match_labels(selector, labels)
    assert result.matched is matched
    assert reason in result.reason
    assert LabelSelector.compile(selector).matches(labels) is matched


@pytest.mark.parametrize(
    ("value", "regex"),
    [
        ("^a$", True),
        ("^$", True),
        ("^", False),
        ("$", False),
        ("^a", False),
        ("a$", False),
        ("a", False),
    ],
)
def test_is_regex(value: str, regex: bool) -> None:
    assert is_regex(value) is regex


def test_failure_reports_first_failing_key() -> None:
    result = match_labels({"env": ["dev"], "team": ["db"]}, PROD)
    assert (result.matched, result.key, result.value, result.expected) == (
        False,
        "env",
        "prod",
        ("dev",),
    )


def test_regexes_compiled_once() -> None:
    assert compile_regex("^cached-[a-z]+$") is compile_regex("^cached-[a-z]+$")
    matcher = ValueMatcher.compile(["^cached-[a-z]+$", "x", "x"])
    assert matcher.regexes == (compile_regex("^cached-[a-z]+$"),)
    assert matcher.values == ("^cached-[a-z]+$", "x")


def test_bad_regex_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid regular expression '\^\(\$'"):
        LabelSelector.compile({"env": ["^($"]})


def test_value_matcher() -> None:
    matcher = ValueMatcher.compile(["alice", "^svc-.*$"])
    assert matcher.matches("alice") and matcher.matches("svc-x")
    assert not matcher.matches("bob") and not matcher.matches("xsvc-x")
    assert not ValueMatcher.compile([]).matches("")
    assert ValueMatcher.compile(["*"]).matches("anything")


_keys = st.sampled_from(["env", "team", "region", "a/b"])
_values = st.one_of(
    st.text(alphabet="abc-", max_size=3), st.sampled_from(["*", "^a.*$", "^$", "^b"])
)
_labels = st.dictionaries(_keys, _values, max_size=4)


@given(_labels)
def test_wildcard_selector_matches_everything(labels: dict[str, str]) -> None:
    assert match_labels({"*": ["*"]}, labels).matched


@given(_labels)
def test_selector_of_own_labels_matches(labels: dict[str, str]) -> None:
    # Escape-free: values containing ^...$ would be regexes, so use '*' for those.
    selector = {k: ["*" if is_regex(v) else v] for k, v in labels.items()}
    assert match_labels(selector, labels).matched is bool(labels)


@given(_labels, _keys)
def test_missing_key_never_matches(labels: dict[str, str], key: str) -> None:
    labels.pop(key, None)
    result = match_labels({key: ["*"]}, labels)
    assert not result.matched
    assert result.key == key and result.value is None


@given(_labels, st.dictionaries(_keys, st.lists(_values, max_size=3), max_size=3), _keys, _values)
def test_adding_a_key_never_widens(
    labels: dict[str, str], selector: dict[str, list[str]], key: str, value: str
) -> None:
    if key in selector:
        return
    narrower = {**selector, key: [value]}
    if match_labels(narrower, labels).matched:
        assert match_labels(selector, labels).matched or not selector
