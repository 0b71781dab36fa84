"""The access request resource and the role fields that govern requests and reviews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bastion.types.access import Role
from bastion.types.meta import Metadata
from bastion.types.requests import (
    AccessRequest,
    AccessRequestSpec,
    check_request_condition,
    parse_resource_id,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_resource_ids() -> None:
    assert parse_resource_id("node/db7") == ("node", "db7")
    assert parse_resource_id("db/orders") == ("db", "orders")
    assert parse_resource_id("app/grafana") == ("app", "grafana")
    for bad in ("db7", "node/", "pod/x", "node/a/b", "db/"):
        with pytest.raises(ValueError):
            parse_resource_id(bad)


def test_conditions_are_checked_when_written() -> None:
    assert check_request_condition('"dba" in reviewer.roles') == '"dba" in reviewer.roles'
    for bad, why in (
        ("reviewer.nme == 'x'", "unknown field"),
        ("user.name == 'x'", "unknown variable"),
        ("reviewer.name", "true or false"),
        ("(", "syntax"),
    ):
        with pytest.raises(ValueError, match=why):
            check_request_condition(bad)


def test_role_fields_parse_and_validate() -> None:
    role = Role.model_validate(
        {
            "metadata": {"name": "dev"},
            "spec": {
                "allow": {
                    "request": {
                        "roles": ["dba"],
                        "thresholds": [
                            {"approve": 2, "deny": 1, "filter": '"x" in reviewer.roles'}
                        ],
                        "max_duration": "4h",
                    },
                    "review_requests": {"roles": ["dba"], "where": "request.user != reviewer.name"},
                }
            },
        }
    )
    assert role.spec.allow.request is not None
    assert role.spec.allow.request.max_duration == timedelta(hours=4)
    with pytest.raises(ValidationError, match="max_duration"):
        Role.model_validate(
            {"metadata": {"name": "d"}, "spec": {"allow": {"request": {"max_duration": "2d"}}}}
        )
    with pytest.raises(ValidationError, match="approve"):
        Role.model_validate(
            {
                "metadata": {"name": "d"},
                "spec": {"allow": {"request": {"thresholds": [{"approve": 0}]}}},
            }
        )


def test_state_at_expires_pending_and_approved_requests() -> None:
    spec = AccessRequestSpec(
        user="a",
        roles=["dba"],
        created=NOW,
        pending_expires=NOW + timedelta(hours=1),
        access_expires=NOW + timedelta(hours=2),
    )
    req = AccessRequest(metadata=Metadata(name="r"), spec=spec)
    assert req.state_at(NOW) == "PENDING"
    assert req.state_at(NOW + timedelta(hours=1)) == "EXPIRED"
    req.spec.state = "APPROVED"
    assert req.state_at(NOW + timedelta(hours=1)) == "APPROVED"
    assert req.state_at(NOW + timedelta(hours=2)) == "EXPIRED"
    req.spec.state = "DENIED"
    assert req.state_at(NOW + timedelta(days=1)) == "DENIED"
    with pytest.raises(ValidationError):
        AccessRequestSpec.model_validate({**spec.model_dump(), "resources": ["pod/x"]})
