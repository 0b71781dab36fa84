from __future__ import annotations

from click.testing import CliRunner

from bastion.cli.bsh_device import device_group


def test_device_help() -> None:
    out = CliRunner().invoke(device_group, ["--help"]).output
    assert "enroll" in out and "status" in out
