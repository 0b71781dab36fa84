"""``bctl scim``: SCIM provisioning for an SSO connector (its bearer token). docs/scim.md.

Layer: client edge.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json
from bastion.contract import scim as s

__all__ = ["register"]


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``scim`` group to ``bctl``."""

    @main.group("scim")
    def scim() -> None:
        """SCIM 2.0 provisioning from an identity provider (Okta, Entra ID, ...).

        \b
        Examples:
          bctl scim token --connector=okta
        """

    @scim.command("token")
    @click.option("--connector", required=True, help="The SSO connector the IdP provisions.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def token(connector: str, fmt: str) -> None:
        """Create (or rotate) the connector's SCIM bearer token; shown once.

        \b
        Example:
          bctl scim token --connector=okta
        """
        reply = ident().send(s.SCIM_TOKEN, s.NewScimToken(connector=connector))
        if fmt == "json":
            print_json(reply.model_dump())
            return
        click.echo(f"SCIM base URL: {reply.url}")
        click.echo(f"Bearer token:  {reply.token}")
        click.echo("The token is shown once; a new one replaces it (the old one stops working).")
