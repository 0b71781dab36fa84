"""Rendering ``bctl access`` answers (pure)."""

from __future__ import annotations

from bastion.cli.bctl_access import format_check, grant_rows


def test_format_check_allowed_with_mfa_and_lock() -> None:
    text = format_check(
        {
            "user": "alice",
            "node": "db7",
            "login": "root",
            "at": "2026-12-07T10:00:00+00:00",
            "allowed": True,
            "reason": 'role "dba" allows login "root" on node "db7"',
            "mfa_required": True,
            "locks": [{"name": "l1", "target": "user=alice", "message": "offboarding"}],
            "roles": [{"role": "dba", "verdict": "allows", "reason": "..."}],
        }
    )
    assert text.splitlines()[0].startswith("ALLOWED: alice as root on db7")
    assert "per-session MFA: required" in text
    assert "lock l1 applies: user=alice (offboarding)" in text
    assert "    dba: allows: ..." in text


def test_format_check_denied() -> None:
    text = format_check({"allowed": False, "reason": "no role allows", "roles": []})
    assert text.startswith("DENIED") and "why: no role allows" in text


def test_grant_rows() -> None:
    items = [{"user": "a", "node": "n", "login": "root", "role": "r", "mfa_required": True}]
    assert grant_rows(items, "node") == [["n", "root", "r", "yes"]]
    assert grant_rows(items, "user") == [["a", "r", "yes"]]
