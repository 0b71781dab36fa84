"""The assertion file: valid shapes, and one-line errors naming the field."""

from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.rbac.solver import load_assertions

GOOD = """
assertions:
  - name: only-dbas
    resource: {labels: {env: prod}}
    login: root
    expect: only
    only: {traits: {team: dba}}
  - name: contractor-never-pci
    user: {roles: [contractor], other_roles: false}
    resource: {labels: {pci: ["yes", "true"]}}
    expect: unreachable
"""


def test_good_file() -> None:
    first, second = load_assertions(GOOD)
    assert first.login == ["root"] and first.only is not None
    assert first.only.traits == {"team": ["dba"]}
    assert second.resource.labels == {"pci": ["yes", "true"]}
    assert not second.user.other_roles


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("assertions: [{name: a, expect: sometimes}]", "assertions[0].expect"),
        ("assertions: [{name: a, expect: unreachable, colour: red}]", "assertions[0].colour"),
        ("assertions: [{name: a, expect: only}]", "needs 'only:'"),
        ("assertions: [{name: a, expect: unreachable, only: {}}]", "is for expect: only"),
        ("assertions: []", "assertions"),
        ("assertions: [{name: a, expect: unreachable}, {name: a, expect: unreachable}]", "twice"),
        ("- just a list", "expected a mapping"),
        ("assertions: [", "not valid YAML"),
    ],
)
def test_bad_files(text: str, message: str) -> None:
    with pytest.raises(BadParameter) as err:
        load_assertions(text, "a.yaml")
    assert err.value.message.startswith("a.yaml") and message in err.value.message
    assert "\n" not in err.value.message
