"""``bctl access check|ls|who``: what policy decides, and why (docs/policy.md).

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`. The answers come
from ``GET /v1/access/*`` (the checker's own decisions, :mod:`bastion.rbac.explain`); this module
only renders them. Needs ``read`` on roles and users.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.contract.access import (
    ACCESS_CHECK,
    ACCESS_LS,
    ACCESS_WHO,
    CheckQuery,
    TargetQuery,
    UserQuery,
)

__all__ = ["format_check", "grant_rows", "register"]


def format_check(answer: dict[str, Any]) -> str:
    """The text ``bctl access check`` prints (pure)."""
    verdict = "ALLOWED" if answer.get("allowed") else "DENIED"
    lines = [
        f"{verdict}: {answer.get('user')} as {answer.get('login')} on {answer.get('node')}"
        f" (at {answer.get('at', 'now')})",
        f"  why: {answer.get('reason', '')}",
    ]
    if answer.get("allowed") and answer.get("mfa_required"):
        lines.append("  per-session MFA: required (bsh ssh asks for a security key)")
    for lock in answer.get("locks", []):
        message = f" ({lock['message']})" if lock.get("message") else ""
        lines.append(f"  lock {lock['name']} applies: {lock['target']}{message}")
    roles = answer.get("roles", [])
    if roles:
        lines.append("  roles:")
        for finding in roles:
            lines.append(f"    {finding['role']}: {finding['verdict']}: {finding['reason']}")
    return "\n".join(lines)


def grant_rows(items: list[dict[str, Any]], first: str) -> list[list[str]]:
    """Table rows of grants; ``first`` is ``node`` (ls) or ``user`` (who) (pure)."""
    rows = []
    for item in items:
        lead = [str(item.get(first, ""))]
        if first == "node":
            lead.append(str(item.get("login", "")))
        rows.append([*lead, str(item.get("role", "")), "yes" if item.get("mfa_required") else ""])
    return rows


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``access`` group to ``bctl``."""

    @main.group("access")
    def access() -> None:
        """Explain access: check one decision, list what a user reaches, who reaches a node.

        \b
        Examples:
          bctl access check --user=alice --node=db7 --login=root --at=2026-12-07T22:00:00Z
          bctl access ls --user=alice
          bctl access who --node=db7 --login=root
        """

    at_option = click.option(
        "--at", default="", help="Decide at this time (ISO 8601, e.g. 2026-12-07T22:00:00Z)."
    )
    fmt_option = click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text"
    )

    @access.command("check")
    @click.option("--user", required=True)
    @click.option("--node", required=True)
    @click.option("--login", required=True)
    @at_option
    @click.option("--source-ip", default="", help="The client address conditions should see.")
    @click.option("--mfa", is_flag=True, help="Assume an MFA-verified certificate.")
    @fmt_option
    @handle_errors
    def check(
        user: str, node: str, login: str, at: str, source_ip: str, mfa: bool, fmt: str
    ) -> None:
        """Would USER log in as LOGIN on NODE, and why: every role's part, locks, MFA.

        \b
        Example:
          bctl access check --user=alice --node=db7 --login=root --at=2026-12-07T22:00:00Z
        """
        query = CheckQuery(user=user, node=node, login=login, at=at, source_ip=source_ip, mfa=mfa)
        answer = ident().send(ACCESS_CHECK, query=query).model_dump()
        if fmt == "json":
            print_json(answer)
            return
        click.echo(format_check(answer))

    @access.command("ls")
    @click.option("--user", required=True)
    @at_option
    @fmt_option
    @handle_errors
    def ls(user: str, at: str, fmt: str) -> None:
        """Every node and login USER can reach (locks aside).

        \b
        Example:
          bctl access ls --user=alice
        """
        items = ident().send(ACCESS_LS, query=UserQuery(user=user, at=at)).items
        if fmt == "json":
            print_json(items)
            return
        print_table(["Node", "Login", "Role", "MFA"], grant_rows(items, "node"))

    @access.command("who")
    @click.option("--node", required=True)
    @click.option("--login", required=True)
    @at_option
    @fmt_option
    @handle_errors
    def who(node: str, login: str, at: str, fmt: str) -> None:
        """Every user who can log in as LOGIN on NODE (locks aside).

        \b
        Example:
          bctl access who --node=db7 --login=root
        """
        query = TargetQuery(node=node, login=login, at=at)
        items = ident().send(ACCESS_WHO, query=query).items
        if fmt == "json":
            print_json(items)
            return
        print_table(["User", "Role", "MFA"], grant_rows(items, "user"))
