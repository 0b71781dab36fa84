from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bctl import main


def test_risk_commands_have_examples() -> None:
    for args, example in ((["risk", "ls"], "bctl risk ls"),
                          (["risk", "test"], "bctl risk test --since 24h")):  # fmt: skip
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and example in result.output


def test_a_bad_since_is_one_line() -> None:
    result = CliRunner().invoke(main, ["risk", "test", "--since", "soon"])
    assert result.exit_code != 0 and "--since" in result.output + (result.stderr or "")
    assert "Traceback" not in result.output
