"""LazyGroup: commands listed without importing them, imported on use."""

from __future__ import annotations

import sys

import click
from click.testing import CliRunner

from bastion.cli.lazy import LazyCommand, LazyGroup


def test_listing_does_not_import_and_running_does() -> None:
    sys.modules.pop("bastion.cli.bsh_recordings", None)
    group = LazyGroup(
        "g",
        lazy={"play": LazyCommand("bastion.cli.bsh_recordings", "play_command", "Play it.")},
    )

    @group.command()
    def here() -> None:
        """A command defined in place."""

    result = CliRunner().invoke(group, ["--help"])
    assert result.exit_code == 0
    assert "Play it." in result.output and "A command defined in place." in result.output
    assert "bastion.cli.bsh_recordings" not in sys.modules
    ctx = group.make_context("g", ["here"])
    command = group.get_command(ctx, "play")
    assert isinstance(command, click.Command) and "bastion.cli.bsh_recordings" in sys.modules
    assert group.get_command(ctx, "nope") is None
