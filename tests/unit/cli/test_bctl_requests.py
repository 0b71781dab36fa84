"""``bctl requests``: registered with ls, approve and deny."""

from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bctl import main


def test_requests_group() -> None:
    out = CliRunner().invoke(main, ["requests", "--help"]).output
    for command in ("ls", "approve", "deny"):
        assert command in out
