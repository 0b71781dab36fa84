"""``bsh request``: its commands, input checks and the request block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from bastion.cli.bsh import main
from bastion.cli.bsh_request import render_request
from bastion.contract import requests as x


def test_the_group_lists_its_commands() -> None:
    out = CliRunner().invoke(main, ["request", "--help"]).output
    for command in ("create", "ls", "show", "review", "drop", "assume"):
        assert command in out


def test_bad_input_is_one_line() -> None:
    result = CliRunner().invoke(main, ["request", "create"])
    assert result.exit_code != 0 and "--roles" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["request", "review", "some-id"])
    assert result.exit_code != 0 and "--approve or --deny" in result.output


def test_render_request(capsys) -> None:  # type: ignore[no-untyped-def]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    reply = x.AccessRequestReply(
        id="r1",
        user="alice",
        roles=["dba"],
        state="PENDING",
        created=later,
        pending_expires=later,
        access_expires=later,
        approvals_needed={"dba": 2},
        reviews=[x.ReviewReply(author="bob", verdict="approve", created=later, reason="ok")],
    )
    render_request(reply)
    out = capsys.readouterr().out
    assert "PENDING (1/2 approvals)" in out and "approve by bob: ok" in out
