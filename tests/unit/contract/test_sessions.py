"""The live-session endpoints: nodes write, users read."""

from __future__ import annotations

from bastion.contract import ENDPOINTS
from bastion.contract import sessions as s


def test_audiences_and_listing() -> None:
    assert s.REPORT_SESSION.audience == s.FORGET_SESSION.audience == "host"
    assert s.LIST_SESSIONS.audience == s.GET_SESSION.audience == "user"
    assert {s.REPORT_SESSION, s.LIST_SESSIONS} <= set(ENDPOINTS)
