"""bsh login's flag checks (the flows themselves run end to end in tests/integration)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bastion.cli.bsh import check_user_flag, main
from bastion.errors import BadParameter


@pytest.mark.parametrize(
    ("invite", "auth", "message"),
    [
        ("TOKEN", None, "--user is not used with --invite: the invite names the account"),
        (None, "passwordless", "--user is not used with --auth=passwordless"),
        (None, "okta", "--user is not used with --auth=okta"),
    ],
)
def test_user_is_refused_where_it_would_be_ignored(invite, auth, message):
    with pytest.raises(BadParameter, match=message):
        check_user_flag("alice", invite, auth)


def test_user_is_fine_for_a_password_login():
    check_user_flag("alice", None, None)
    check_user_flag("alice", None, "local")
    check_user_flag(None, "TOKEN", "passwordless")


def test_login_refuses_before_contacting_anyone(tmp_path, monkeypatch):
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    args = ["login", "--proxy=127.0.0.1:1", "--auth=passwordless", "--user=alice"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "the passkey names the account" in result.output
