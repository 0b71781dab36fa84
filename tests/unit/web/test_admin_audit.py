"""The audit page's search parsing, paging (newest first) and the proof check's findings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.errors import BadParameter
from bastion.types.audit import AuditEvent
from bastion.web.admin_audit import check_proof, page_of, parse_search, to_query


def test_search_form_to_query() -> None:
    search = parse_search(
        {"type": "user.*, lock.create", "user": "bob", "since": "2025-01-31T12:00"}
    )
    query = to_query(search, 100)
    assert query.types == ("user.*", "lock.create") and query.user == "bob"
    assert query.since == datetime(2025, 1, 31, 12, tzinfo=UTC) and query.limit == 100
    with pytest.raises(BadParameter, match="outcome"):
        parse_search({"outcome": "maybe"})
    with pytest.raises(BadParameter, match="since"):
        to_query(parse_search({"since": "yesterday"}), 10)


def test_pages_are_newest_first() -> None:
    events = [
        AuditEvent(type="t", time=datetime(2025, 1, 1, tzinfo=UTC), id=str(i)) for i in range(5)
    ]
    assert [e.id for e in page_of(events, 1, per_page=2)] == ["4", "3"]
    assert [e.id for e in page_of(events, 3, per_page=2)] == ["0"]


def test_a_broken_proof_is_a_finding_not_a_traceback() -> None:
    ok, finding = check_proof({"verifier_key": "nonsense", "checkpoint": "", "proof": []})
    assert not ok and "could not be checked" in finding
    ok, finding = check_proof({})
    assert not ok
