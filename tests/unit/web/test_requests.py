"""The access request pages' pure parts: the create form and the escaped request table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.types.meta import Metadata
from bastion.types.requests import AccessRequest, AccessRequestSpec
from bastion.web.requests import new_request_from_form, request_table

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_the_form_asks_for_roles_or_one_resource() -> None:
    new = new_request_from_form({"roles": "dba, ops,", "reason": " INC-1 ", "duration": "2h"})
    assert (new.roles, new.resources, new.reason) == (("dba", "ops"), (), "INC-1")
    assert new.duration == timedelta(hours=2)
    assert new_request_from_form({"resource": "node/db7"}).resources == ("node/db7",)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "ask for roles"),
        ({"roles": "dba", "resource": "node/db7"}, "not both"),
        ({"roles": "dba", "duration": "soon"}, "invalid duration"),
        ({"roles": "dba", "duration": "0s"}, "positive"),
        ({"roles": "dba", "reason": "x" * 2000}, "at most"),
    ],
)
def test_bad_forms_are_one_line_errors(form: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        new_request_from_form(form)


@given(st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_every_value_in_the_table_is_escaped(user: str, reason: str) -> None:
    spec = AccessRequestSpec(
        user=user,
        roles=["<b>dba</b>"],
        reason=reason,
        created=NOW,
        pending_expires=NOW + timedelta(hours=1),
        access_expires=NOW + timedelta(hours=1),
    )
    html = request_table([AccessRequest(metadata=Metadata(name="r-1"), spec=spec)], "t", "none")
    assert "<b>" not in html and "<script" not in html.lower()
    assert 'href="/web/requests/r-1"' in html
    assert "none" in request_table([], "t", "none")
