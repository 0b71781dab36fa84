from click.testing import CliRunner

from bastion.cli.bsh_ssh import ssh_command


def test_ssh_help_mentions_cluster() -> None:
    result = CliRunner().invoke(ssh_command, ["--help"])
    assert result.exit_code == 0 and "--cluster" in result.output
