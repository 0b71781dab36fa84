"""``bctl requests``: admins list, approve and deny access requests.

Layer: client edge. An admin identity (the local admin of the auth host, or a user whose roles
allow rule ``access_request: update``) resolves a request outright; a user with
``review_requests`` rights adds a review that counts toward the thresholds.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from bastion.cli.common import emit_json, handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_table
from bastion.contract import requests as x

__all__ = ["register"]


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    @main.group("requests")
    def requests_group() -> None:
        """List, approve and deny access requests.

        \b
        Examples:
          bctl requests ls --state=pending
          bctl requests approve ID --reason="on call"
          bctl requests deny ID --reason="not during the freeze"
        """

    @requests_group.command("ls")
    @click.option(
        "--state",
        type=click.Choice(["", "pending", "approved", "denied", "expired"]),
        default="",
    )
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def ls(state: str, fmt: str) -> None:
        """Every access request you may see.

        \b
        Examples:
          bctl requests ls --state=pending
          bctl requests ls --format json
        """
        query = x.ListQuery(state=state)
        items = ident().send(x.LIST_REQUESTS, query=query).items
        if fmt == "json":
            emit_json([i.model_dump(mode="json") for i in items])
            return
        rows = [
            [r.id, r.user, ", ".join(r.resources or r.roles), r.state, r.created[:19], r.reason]
            for r in items
        ]
        print_table(["ID", "User", "Asks for", "State", "Created", "Reason"], rows, "No requests.")

    def _resolve(request_id: str, verdict: str, reason: str, fmt: str) -> None:
        body = x.Review(verdict=verdict, reason=reason)
        done = ident().send(x.REVIEW_REQUEST, body, path={"id": request_id})
        if fmt == "json":
            emit_json(done.model_dump(mode="json"))
        else:
            click.echo(f"Access request {done.id} of {done.user}: {done.state}.")

    @requests_group.command("approve")
    @click.argument("request_id")
    @click.option("--reason", default="", help="Recorded with the decision.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def approve(request_id: str, reason: str, fmt: str) -> None:
        """Approve a request.

        \b
        Example:
          bctl requests approve ID --reason="on call"
        """
        _resolve(request_id, "approve", reason, fmt)

    @requests_group.command("deny")
    @click.argument("request_id")
    @click.option("--reason", default="", help="Recorded with the decision.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def deny(request_id: str, reason: str, fmt: str) -> None:
        """Deny a request.

        \b
        Example:
          bctl requests deny ID --reason="not during the freeze"
        """
        _resolve(request_id, "deny", reason, fmt)
