"""``bctl risk``: the risk rules in force and a dry run over the audit log. docs/risk.md.

Layer: client edge. Rules are ``risk_rule`` resources (``bctl create -f``, ``bctl get
risk_rules``); ``bctl risk ls`` shows every rule in force (built-ins too) with its state and
when it last fired, ``bctl risk test --since 24h`` replays the log and prints what would fire.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table, short_time
from bastion.contract import risk as r
from bastion.contract.base import Empty
from bastion.errors import BadParameter
from bastion.types.duration import parse_duration

__all__ = ["register"]


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``risk`` group to ``bctl``."""

    @main.group("risk")
    def risk() -> None:
        """Risk signals over the audit stream: rules, their state, dry runs.

        \b
        Examples:
          bctl risk ls
          bctl risk test --since 24h
          bctl get risk_rules
        """

    @risk.command("ls")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def ls(fmt: str) -> None:
        """The rules in force (built-in and stored), their settings and last firing.

        \b
        Example:
          bctl risk ls
        """
        reply = ident().send(r.RISK_RULES, Empty())
        if fmt == "json":
            print_json(reply.model_dump())
            return
        rows = [
            [
                row.name,
                row.type,
                "on" if row.enabled else "off",
                row.action,
                "built-in" if row.builtin else "stored",
                row.settings,
                ",".join(row.users) or "*",
                f"{short_time(row.last_fired)} {row.last_subject}" if row.last_fired else "never",
            ]  # fmt: skip
            for row in reply.rules
        ]
        print_table(["Rule", "Type", "State", "Action", "Source", "Settings", "Users",
                     "Last fired"], rows)  # fmt: skip
        if reply.cursor is not None:
            click.echo(f"evaluator position: audit event {reply.cursor}")

    @risk.command("test")
    @click.option("--since", default="24h", show_default=True,
                  help="How far back to replay (e.g. 1h, 24h, 7d).")  # fmt: skip
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def test(since: str, fmt: str) -> None:
        """Replay the audit log through the rules and print what would fire (changes nothing).

        \b
        Example:
          bctl risk test --since 24h
        """
        try:
            span = parse_duration(since)
        except ValueError as exc:
            raise BadParameter(f"--since: {exc}") from None
        seconds = int(span.total_seconds())
        if seconds < 1:
            raise BadParameter("--since must be at least 1s")
        reply = ident().send(r.RISK_TEST, r.RiskTest(since_seconds=seconds))
        if fmt == "json":
            print_json(reply.model_dump())
            return
        rows = [
            [short_time(s.time), s.rule, s.subject, s.action, s.message, str(len(s.evidence))]
            for s in reply.signals
        ]
        print_table(["Time", "Rule", "Subject", "Would do", "Why", "Evidence"], rows,
                    empty="nothing would fire")  # fmt: skip
        click.echo(f"{reply.events} events replayed, {len(reply.signals)} signals (dry run)")
