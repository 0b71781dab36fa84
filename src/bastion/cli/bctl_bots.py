"""``bctl bots add/ls/rm``: machine identities (issue 18, docs/machine-id.md).

Layer: client edge. Registered onto ``bctl`` by :func:`register`. ``bctl lock --bot=NAME``
locks a bot (its live sessions end, its renewals are refused).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.errors import BadParameter
from bastion.types.access import OIDCJoinSpec
from bastion.types.duration import parse_duration

__all__ = ["parse_allow", "register"]


def parse_allow(rules: tuple[str, ...]) -> list[dict[str, str]]:
    """``--allow repository=org/app,ref=refs/heads/main`` (repeatable: any rule matches).

    Raises:
        BadParameter: a rule that is not ``claim=value[,claim=value...]``.
    """
    out = []
    for rule in rules:
        parsed: dict[str, str] = {}
        for part in rule.split(","):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise BadParameter(f"--allow {rule!r}: use claim=value[,claim=value...]")
            parsed[name.strip()] = value.strip()
        out.append(parsed)
    return out


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``bots`` group to ``bctl``."""

    @main.group("bots")
    def bots() -> None:
        """Bots: machines with short-lived, renewed certificates (bbot start).

        \b
        Examples:
          bctl bots add ci --roles=access --logins=deploy
          bctl bots ls
          bctl bots rm ci
        """

    @bots.command("add")
    @click.argument("name")
    @click.option("--roles", required=True, help="Comma-separated roles.")
    @click.option("--logins", default="", help="Comma-separated OS logins.")
    @click.option("--ttl", default="1h", show_default=True, help="Join token lifetime.")
    @click.option("--oidc-issuer", default="", help="Join with OIDC tokens of this https issuer.")
    @click.option("--oidc-audience", default="bastion", show_default=True)
    @click.option("--allow", multiple=True, help="OIDC claim rule: repository=org/app,ref=...")
    @click.option(
        "--public-key", "public_key_file", default="",
        help="Join method bound_keypair: the bot's OpenSSH public key file (.pub).",
    )  # fmt: skip
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def add(
        name: str,
        roles: str,
        logins: str,
        ttl: str,
        oidc_issuer: str,
        oidc_audience: str,
        allow: tuple[str, ...],
        public_key_file: str,
        fmt: str,
    ) -> None:
        """Create a bot and its join token (shown once).

        \b
        Examples:
          bctl bots add ci --roles=access --logins=deploy
          bctl bots add gha --roles=access --logins=deploy \\
            --oidc-issuer=https://token.actions.githubusercontent.com \\
            --allow=repository=org/app,ref=refs/heads/main
          bctl bots add nightly --roles=access --logins=deploy --public-key=bot_key.pub
        """
        from bastion.contract.bots import BOTS_ADD, AddBot

        try:
            lifetime: timedelta = parse_duration(ttl)
        except ValueError:
            raise BadParameter(f"invalid --ttl {ttl!r}: use 30m, 1h, 2d") from None
        oidc = None
        if oidc_issuer:
            try:
                oidc = OIDCJoinSpec(
                    issuer=oidc_issuer, audience=oidc_audience, allow=parse_allow(allow)
                )
            except ValueError as exc:
                raise BadParameter(f"--oidc-*: {str(exc).splitlines()[-1]}") from None
        bound = ""
        if public_key_file:
            try:
                bound = Path(public_key_file).read_text().strip()
            except OSError as exc:
                raise BadParameter(f"cannot read {public_key_file}: {exc.strerror}") from None
        body = AddBot(
            name=name, roles=_split(roles), logins=_split(logins), ttl=lifetime, oidc=oidc,
            bound_public_key=bound,
        )  # fmt: skip
        reply = ident().send(BOTS_ADD, body)
        if fmt == "json":
            print_json(reply.model_dump(mode="json"))
            return
        click.echo(f'bot "{name}" created (user {reply.bot.user}, roles {roles}).')
        if reply.token:
            click.echo(f"join token (single use, until {reply.token_expires}): {reply.token}")
            click.echo(f"run: bbot start --token={reply.token} --proxy=HOST:PORT --ca-pin=...")
        elif bound:
            click.echo(
                f"joins with its bound key: bbot start --join-method=bound_keypair --bot={name} "
                "--keypair=PRIVATE_KEY"
            )
        else:
            click.echo(f"joins with OIDC tokens of {oidc_issuer}: bbot start --join-method=oidc")

    @bots.command("ls")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def ls(fmt: str) -> None:
        """List bots.

        \b
        Examples:
          bctl bots ls
          bctl bots ls --format json
        """
        from bastion.contract.bots import BOTS_LS

        items = ident().send(BOTS_LS).items
        if fmt == "json":
            print_json([i.model_dump(mode="json") for i in items])
            return
        rows = [[i.name, ",".join(i.roles), ",".join(i.logins), str(i.generation)] for i in items]
        print_table(["Bot", "Roles", "Logins", "Generation"], rows, empty="no bots")

    @bots.command("rm")
    @click.argument("name")
    @handle_errors
    def rm(name: str) -> None:
        """Delete a bot: its certificates stop working and its sessions end.

        \b
        Example:
          bctl bots rm ci
        """
        from bastion.contract.bots import BOTS_RM

        ident().send(BOTS_RM, path={"name": name})
        click.echo(f'bot "{name}" deleted')
