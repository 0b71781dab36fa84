"""The join-token form (as bctl tokens add)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.errors import BadParameter
from bastion.web.admin_tokens import parse_token_form


def test_roles_ttl_and_labels() -> None:
    roles, ttl, labels = parse_token_form({"roles": "node, db", "ttl": "2h", "labels": "a=b, c=d"})
    assert roles == ["node", "db"] and ttl == timedelta(hours=2) and labels == {"a": "b", "c": "d"}
    assert parse_token_form({"roles": "node"})[1] == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"roles": ""}, "roles"),
        ({"roles": "admin"}, "roles"),
        ({"roles": "node", "ttl": "soon"}, "invalid TTL"),
        ({"roles": "node", "ttl": "90d"}, "30 days"),
        ({"roles": "node", "labels": "nolabel"}, "key=value"),
    ],
)
def test_bad_forms_are_refused(form: dict[str, str], error: str) -> None:
    with pytest.raises(BadParameter, match=error):
        parse_token_form(form)
