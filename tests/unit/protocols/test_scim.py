"""SCIM documents and PATCH operations as Okta and Entra ID send them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.protocols.scim import apply_patch, group_spec_from, user_spec_from
from bastion.types.scim import PATCH_SCHEMA, USER_SCHEMA, ScimProblem


def _user(**extra: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": "alice@example.com", "active": True, **extra}


def _patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(ops)}


def test_okta_deactivate() -> None:
    doc = apply_patch(_user(), _patch({"op": "replace", "value": {"active": False}}))
    assert user_spec_from(doc, "okta").active is False


def test_entra_deactivate_with_a_path_and_a_string_boolean() -> None:
    doc = apply_patch(_user(), _patch({"op": "Replace", "path": "active", "value": "False"}))
    assert user_spec_from(doc, "entra").active is False


def test_entra_replaces_a_sub_attribute_and_a_filtered_email() -> None:
    start = _user(emails=[{"value": "a@x", "type": "work", "primary": True}])
    ops = _patch(
        {"op": "replace", "path": "name.givenName", "value": "Alice"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "b@x"},
        {"op": "add", "value": {"displayName": "Alice A", "name.familyName": "A"}},
    )
    spec = user_spec_from(apply_patch(start, ops), "entra")
    assert (spec.given_name, spec.family_name, spec.display_name) == ("Alice", "A", "Alice A")
    assert spec.emails == ["b@x"]


def test_group_member_add_and_remove_as_okta_and_entra_send_them() -> None:
    group = {"displayName": "eng", "members": [{"value": "u1"}, {"value": "u2"}]}
    okta = _patch(
        {"op": "add", "path": "members", "value": [{"value": "u3"}, {"value": "u1"}]},
        {"op": "remove", "path": "members", "value": [{"value": "u2"}]},
    )
    assert group_spec_from(apply_patch(group, okta), "o").members == ["u1", "u3"]
    entra = _patch({"op": "Remove", "path": 'members[value eq "u1"]'})
    assert group_spec_from(apply_patch(group, entra), "e").members == ["u2"]
    rename = _patch({"op": "replace", "value": {"id": "ignored", "displayName": "platform"}})
    assert group_spec_from(apply_patch(group, rename), "o").display_name == "platform"


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ([], "invalidSyntax"),
        ({"schemas": ["urn:other"], "Operations": []}, "invalidValue"),
        (_patch(), "invalidSyntax"),
        (_patch({"op": "move", "path": "a"}), "invalidSyntax"),
        (_patch({"op": "remove"}), "noTarget"),
        (_patch({"op": "add", "path": "members[bad"}), "invalidPath"),
        (_patch({"op": "add", "path": 'members[x xx "1"]', "value": 1}), "invalidPath"),
        (_patch({"op": "replace", "value": 3}), "invalidValue"),
    ],
)
def test_malformed_patches_say_why(body: Any, scim_type: str) -> None:
    with pytest.raises(ScimProblem) as err:
        apply_patch(_user(), body)
    assert err.value.scim_type == scim_type


@pytest.mark.parametrize(
    "doc",
    [_user(userName=""), _user(userName="a b"), _user(active="maybe"), {"userName": 3}, [1]],
)
def test_bad_users_are_invalid_values(doc: Any) -> None:
    with pytest.raises(ScimProblem):
        user_spec_from(doc, "c")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
PATHS = ["active", "members", 'members[value eq "u1"]', "name.givenName",
         "emails[type eq 1].value", "a[", "urn:x:userName"]  # fmt: skip
OP = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "Add", "x"])},
    optional={
        "path": st.sampled_from(PATHS) | st.text(max_size=6),
        "value": JSON,
    },
)  # fmt: skip


@given(st.lists(OP, min_size=1, max_size=4))
def test_any_patch_applies_or_is_a_scim_problem(ops: list[dict[str, Any]]) -> None:
    try:
        doc = apply_patch(_user(members=[{"value": "u1"}]), _patch(*ops))
    except ScimProblem:
        return
    try:
        user_spec_from(doc, "c")
    except ScimProblem:
        pass
