from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bctl import main


def test_scim_token_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["scim", "token", "--help"])
    assert result.exit_code == 0 and "bctl scim token --connector=okta" in result.output
