"""The bsh group and its light commands: lazy loading, status exit codes, durations, completion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bastion.cli.bsh import LAZY, format_duration, main

HEAVY = ("aiohttp", "asyncssh", "pydantic", "cryptography")


@pytest.mark.parametrize("args", [["--help"], ["status"]])
def test_help_and_status_load_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    code = (
        "import sys\nfrom bastion.cli.bsh import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"BSH_HOME": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_help_lists_every_command_with_its_help_and_an_example() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name, spec in LAZY.items():
        assert f"{name} " in result.output and spec.short_help[:30] in result.output
    assert "Examples:" in result.output and "bsh ssh root@web1 uptime" in result.output


def test_lazy_commands_resolve_to_real_commands() -> None:
    ctx = main.make_context("bsh", ["status"])
    for name in LAZY:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name


def test_status_exits_non_zero_when_logged_out(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"BSH_HOME": str(tmp_path)}
    result = runner.invoke(main, ["status"], env=env)
    assert result.exit_code == 4 and "Not logged in" in result.output
    result = runner.invoke(main, ["status", "--format", "json"], env=env)
    assert result.exit_code == 4 and json.loads(result.output)["profiles"] == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "1m"),
        (59, "59s"),
        (61, "1m1s"),
        (3600, "1h"),
        (7500, "2h5m"),
        (90000, "1d1h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    result = CliRunner().invoke(main, ["completion", shell])
    assert result.exit_code == 0 and "_BSH_COMPLETE" in result.output
