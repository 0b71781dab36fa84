"""The role editor's checks before the server's: one role, same name, valid fields."""

from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.web.admin_roles import NEW_ROLE, parse_role

ROLE = "kind: role\nversion: v1\nmetadata: {name: dev}\nspec: {allow: {logins: [ubuntu]}}\n"


def test_a_valid_edit_keeps_the_name() -> None:
    assert parse_role(ROLE.replace("\n", "\r\n"), "dev").name == "dev"
    assert parse_role(NEW_ROLE.replace("NAME", "fresh"), None).name == "fresh"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (ROLE.replace("dev", "ops"), "name cannot be changed"),
        (ROLE.replace("kind: role", "kind: lock"), 'lock "dev"'),
        (ROLE + "---\n" + ROLE, "exactly one role"),
        ("kind: role\nmetadata: {name: dev\n", "invalid YAML at line"),
        (ROLE.replace("{allow:", "{max_session_ttl: soon, allow:"), 'role "dev"'),
    ],
)
def test_bad_edits_are_one_line_errors(text: str, error: str) -> None:
    with pytest.raises(BadParameter, match=error):
        parse_role(text, "dev")
