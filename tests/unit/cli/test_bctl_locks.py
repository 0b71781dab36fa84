"""The pure parts of ``bctl lock`` / ``bctl locks ls``: building the lock and the table rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from bastion.cli.bctl import main
from bastion.cli.bctl_locks import build_lock, lock_rows
from bastion.errors import BadParameter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_build_lock_with_ttl_and_generated_name() -> None:
    lock = build_lock({"user": "alice", "node": ""}, "laptop stolen", "8h", NOW)
    assert lock.spec.target.user == "alice" and not lock.spec.target.node
    assert lock.spec.message == "laptop stolen"
    assert lock.metadata.expires == NOW + timedelta(hours=8)
    assert len(lock.name) == 36  # a UUID
    assert build_lock({"user": "a"}, "", None, NOW).metadata.expires is None


@pytest.mark.parametrize(
    ("targets", "ttl", "error"),
    [
        ({"user": " "}, None, "at least one target"),
        ({}, None, "--mfa-device"),
        ({"user": "a"}, "soon", "invalid --ttl"),
        ({"user": "a"}, "0s", "positive"),
    ],
)
def test_build_lock_refuses(targets: dict[str, str], ttl: str | None, error: str) -> None:
    with pytest.raises(BadParameter, match=error):
        build_lock(targets, "", ttl, NOW)


def test_lock_rows() -> None:
    items = [
        {
            "metadata": {"name": "l1", "expires": "2026-01-01T08:00:00Z"},
            "spec": {"target": {"user": "alice", "node": "web1", "role": ""}, "message": "m",
                     "created_by": "admin"},
        },
        {"metadata": {"name": "l2"}, "spec": {"target": {"device": "d"}}},
    ]  # fmt: skip
    assert lock_rows(items) == [
        ["l1", "user=alice,node=web1", "m", "2026-01-01T08:00:00Z", "admin"],
        ["l2", "device=d", "", "never", ""],
    ]


def test_cli_without_target_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["--data-dir", "/nonexistent", "lock", "--message=x"])
    assert result.exit_code != 0
    assert "at least one target" in result.output
