"""``bsh sessions`` and ``bsh join`` are registered and documented."""

from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bsh import main


def test_help() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["join", "--help"])
    assert out.exit_code == 0 and "Ctrl-T" in out.output and "moderator" in out.output
    out = runner.invoke(main, ["sessions", "--help"])
    assert out.exit_code == 0 and "kill" in out.output and "ls" in out.output
