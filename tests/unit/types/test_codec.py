import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.types import Role, dump_resource, load_resources
from bastion.types.codec import canonical_kind

ROLE = """
kind: role
version: v1
metadata:
  name: dev
  labels: {team: platform}
spec:
  options: {max_session_ttl: 8h, client_idle_timeout: 15m}
  allow:
    logins: ['{{internal.logins}}', ubuntu]
    node_labels: {env: [staging, '^dev-[0-9]+$'], '*': '*'}
    rules: [{resources: [node], verbs: [list, read]}]
  deny:
    node_labels: {env: prod}
"""


def test_yaml_round_trip_keeps_everything():
    role = load_resources(ROLE)[0]
    assert isinstance(role, Role)
    again = load_resources(dump_resource(role))[0]
    assert again == role
    as_json = load_resources(dump_resource(role, "json"))[0]
    assert as_json == role
    assert "max_session_ttl: 8h" in dump_resource(role)


def test_multi_document_and_json_list():
    text = ROLE + "---\n" + ROLE.replace("name: dev", "name: ops")
    assert [r.name for r in load_resources(text)] == ["dev", "ops"]
    docs = [json.loads(dump_resource(r, "json")) for r in load_resources(text)]
    assert [r.name for r in load_resources(json.dumps(docs))] == ["dev", "ops"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n"
            "    node_labels: {env: '^(prod'}\n",
            'role "dev": spec.allow.node_labels.env: invalid regular expression "^(prod": '
            "missing ), unterminated subpattern",
        ),
        (
            "kind: role\nmetadata: {name: dev}\nspec: {alow: {}}\n",
            'role "dev": spec.alow: unknown field',
        ),
        ("kind: rolez\nmetadata: {name: x}\n", "unknown kind 'rolez'"),
        (
            "kind: role\nmetadata: {name: dev}\nspec:\n  options: {max_session_ttl: forever}\n",
            'role "dev": spec.options.max_session_ttl: invalid duration',
        ),
        ("kind: role\nmetadata: {name: 'bad name'}\n", "metadata.name: invalid name"),
        ("kind: role\nmetadata: {name: dev\n", "invalid YAML at line"),
        ('{"kind": ', "invalid JSON at line 1"),
        ("kind: role\n", "role: metadata: field required"),
        ("", "no resources found"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("kind: role\nversion: v9\nmetadata: {name: dev}\n", "unsupported version 'v9'"),
        (
            "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    rules: [{resources: [nodez],"
            " verbs: [list]}]\n",
            "spec.allow.rules[0].resources: unknown resource kind 'nodez'",
        ),
        ("kind: token\nmetadata: {name: t}\nspec: {roles: [wizard]}\n", "unknown join role"),
        ("kind: lock\nmetadata: {name: l}\nspec: {target: {}}\n", "at least one target"),
    ],
)
def test_bad_input_names_resource_field_and_problem(text, message):
    with pytest.raises(BadParameter) as info:
        load_resources(text)
    assert message in str(info.value)


def test_aliases():
    assert canonical_kind("roles") == "role"
    assert canonical_kind("ca") == "cert_authority"


@given(st.text(max_size=300))
def test_garbage_only_raises_bad_parameter(text):
    try:
        load_resources(text)
    except BadParameter:
        pass
