"""The access request endpoints: declared once, for people, with strict bodies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.contract import ENDPOINTS, endpoints_of
from bastion.contract import requests as x


def test_every_endpoint_is_listed_and_for_users() -> None:
    declared = endpoints_of(x)
    assert len(declared) == 7
    for endpoint in declared:
        assert endpoint in ENDPOINTS and endpoint.audience == "user"
    assert x.REVIEW_REQUEST.url(id="a b") == "/v1/access-requests/a%20b/reviews"
    assert x.REQUESTABLE.url(kind="node", name="db7") == "/v1/requestable/node/db7"


def test_bodies_are_strict_and_parse_durations() -> None:
    body = x.NewAccessRequest.model_validate({"roles": ["dba"], "duration": "30m"})
    assert body.duration == timedelta(minutes=30)
    with pytest.raises(ValidationError):
        x.NewAccessRequest.model_validate({"rolez": ["dba"]})
    with pytest.raises(ValidationError):
        x.Review.model_validate({"verdict": "maybe"})
    assert x.Assume.model_validate({"public_key": "k"}).ttl == timedelta(hours=12)
