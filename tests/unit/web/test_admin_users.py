"""The users page's pure parts: role and login lists, the last editor warning."""

from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.types.access import User, UserSpec
from bastion.types.meta import Metadata
from bastion.web.admin_users import last_holder, parse_list


def test_lists_split_on_commas_and_spaces_and_refuse_odd_names() -> None:
    assert parse_list(" access, editor  auditor,", "roles") == ["access", "editor", "auditor"]
    assert parse_list("", "roles") == []
    with pytest.raises(BadParameter, match="logins"):
        parse_list("ubuntu <script>", "logins")


def _user(name: str, *roles: str) -> User:
    return User(metadata=Metadata(name=name), spec=UserSpec(roles=list(roles)))


def test_last_editor_is_detected() -> None:
    users = [_user("a", "editor"), _user("b", "access")]
    assert last_holder(users, "a")
    assert not last_holder(users, "b")
    assert not last_holder([*users, _user("c", "editor")], "a")
