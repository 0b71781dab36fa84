from click.testing import CliRunner

from bastion.cli.bsh_ssh import ssh_command


def test_ssh_help_mentions_cluster() -> None:
    result = CliRunner().invoke(ssh_command, ["--help"])
    assert result.exit_code == 0 and "--cluster" in result.output


def test_cluster_rows() -> None:
    from bastion.cli.bsh_clusters import cluster_rows

    rows = cluster_rows(
        [
            {
                "name": "leaf.test",
                "status": "online",
                "last_heartbeat": "2026-01-01T00:00:00+00:00",
                "roles": ["access", "dev"],
                "logins": ["root"],
            },
            {"name": "b", "status": "online"},
        ]
    )
    assert rows[0] == ["leaf.test", "online", "2026-01-01T00:00:00+00:00", "access,dev", "root"]
    assert rows[1] == ["b", "online", "-", "", ""]


def test_clusters_help_has_an_example() -> None:
    from bastion.cli.bsh_clusters import clusters_command

    result = CliRunner().invoke(clusters_command, ["--help"])
    assert result.exit_code == 0 and "bsh clusters" in result.output
