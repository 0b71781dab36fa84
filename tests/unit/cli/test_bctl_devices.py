from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bctl import main


def test_devices_help_lists_commands() -> None:
    out = CliRunner().invoke(main, ["devices", "--help"]).output
    for word in ("add", "ls", "show", "rm", "enroll", "compliance"):
        assert word in out
