"""Serialising access requests for the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.api.requests import request_reply
from bastion.types.meta import Metadata
from bastion.types.requests import AccessRequest, AccessRequestSpec, AccessReview, Threshold

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_request_reply_carries_reviews_and_approvals_needed() -> None:
    spec = AccessRequestSpec(
        user="alice",
        roles=["dba"],
        created=NOW,
        pending_expires=NOW + timedelta(hours=1),
        access_expires=NOW + timedelta(hours=2),
        thresholds=[Threshold(approve=3), Threshold(approve=2)],
        role_thresholds={"dba": [0, 1]},
        reviews=[AccessReview(author="bob", verdict="approve", created=NOW)],
    )
    reply = request_reply(AccessRequest(metadata=Metadata(name="r1"), spec=spec))
    assert reply.id == "r1" and reply.state == "PENDING"
    assert reply.approvals_needed == {"dba": 2}
    assert reply.reviews[0].author == "bob" and reply.reviews[0].verdict == "approve"
    assert reply.access_expires == (NOW + timedelta(hours=2)).isoformat()
