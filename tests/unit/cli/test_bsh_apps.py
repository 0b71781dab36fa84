from pathlib import Path

from click.testing import CliRunner

from bastion.cli.bsh_apps import apps_group, curl_flags


def test_curl_flags():
    line = curl_flags(Path("/p/apps/grafana"), "grafana.proxy.test:3080")
    assert line == (
        "curl --cert /p/apps/grafana.crt --key /p/apps/grafana.key "
        "--cacert /p/apps/grafana.ca https://grafana.proxy.test:3080/"
    )


def test_help_lists_the_commands():
    out = CliRunner().invoke(apps_group, ["--help"]).output
    assert all(c in out for c in ("ls", "login", "config", "logout"))
