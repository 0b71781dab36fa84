"""The lock form: one target, a message, a TTL (as bctl lock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.errors import BadParameter
from bastion.web.admin_locks import build_lock

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_lock_with_message_and_ttl() -> None:
    lock = build_lock({"target_kind": "node", "target": " web1 ", "message": "m", "ttl": "1h"}, NOW)
    assert lock.spec.target.node == "web1" and lock.spec.message == "m"
    assert lock.metadata.expires == NOW + timedelta(hours=1)
    assert build_lock({"target_kind": "user", "target": "bob"}, NOW).metadata.expires is None


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"target_kind": "user_epoch", "target": "x"}, "target kind"),
        ({"target_kind": "user", "target": " "}, "give the user"),
        ({"target_kind": "user", "target": "b", "ttl": "soon"}, "invalid TTL"),
        ({"target_kind": "user", "target": "b", "ttl": "0s"}, "positive"),
    ],
)
def test_bad_forms_are_refused(form: dict[str, str], error: str) -> None:
    with pytest.raises(BadParameter, match=error):
        build_lock(form, NOW)
