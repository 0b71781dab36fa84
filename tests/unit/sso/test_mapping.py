from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.sso.mapping import (
    NoRoleMapped,
    Rule,
    SSOIdentity,
    claims_to_traits,
    map_roles,
    normalize_claims,
    require_roles,
)


def test_literal_glob_and_regex_rules() -> None:
    rules = [
        Rule("groups", "admins", ("editor",)),
        Rule("groups", "team-*", ("access",)),
        Rule("email", "^(.+)@example\\.com$", ("user-$1",)),
    ]
    claims = {"groups": ["team-a", "admins"], "email": ["bob@example.com"]}
    assert map_roles(rules, claims) == ["editor", "access", "user-bob"]


def test_captures_feed_role_templates() -> None:
    rules = [Rule("groups", "^env-(?P<env>\\w+)-(\\w+)$", ("${env}-$2", "fixed", "$$lit"))]
    assert map_roles(rules, {"groups": ["env-prod-ops", "env-dev-ops"]}) == [
        "prod-ops",
        "fixed",
        "$lit",
        "dev-ops",
    ]


def test_regex_must_match_the_whole_value() -> None:
    assert map_roles([Rule("g", "^dev$", ("r",))], {"g": ["devops"]}) == []
    assert map_roles([Rule("g", "dev", ("r",))], {"g": ["devops"]}) == []


def test_no_role_names_connector_claim_and_values() -> None:
    with pytest.raises(NoRoleMapped) as info:
        require_roles("okta", [Rule("groups", "admins", ("editor",))], {"groups": ["sales"]})
    message = info.value.message
    assert 'connector "okta"' in message and "groups" in message and "sales" in message


def test_normalize_claims_keeps_strings_flattens_lists_drops_objects() -> None:
    raw = {"a": "x", "b": ["y", 2, True, None, {"z": 1}], "c": {"nested": 1}, "d": None}
    assert normalize_claims(raw) == {"a": ["x"], "b": ["y", "2", "true"]}


def test_traits_carry_the_sso_key_not_token_bookkeeping() -> None:
    identity = SSOIdentity(
        "okta", "oidc", "https://idp", "sub-1", "bob", {"groups": ["g"], "nonce": ["n"]}
    )
    traits = claims_to_traits(identity)
    assert traits["groups"] == ["g"] and "nonce" not in traits
    assert traits["sso_subject"] == ["sub-1"] and traits["sso_issuer"] == ["https://idp"]
    assert identity.user == "okta:bob"
    assert identity.key == ("okta", "https://idp", "sub-1")


@given(st.dictionaries(st.text(max_size=5), st.lists(st.text(max_size=8), max_size=4)))
def test_mapping_never_raises_on_any_claims(claims: dict[str, list[str]]) -> None:
    rules = [Rule(k or "x", "^(.*)$", ("r-$1",)) for k in list(claims)[:3]]
    roles = map_roles(rules, claims)
    assert len(roles) == len(set(roles))
