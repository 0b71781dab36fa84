"""``bbot``: machine identity. ``bbot join`` exchanges a single-use join token for a host
identity (SSH host certificate + X.509 host certificate) for a key generated here.

Layer: client edge. Output directory (every file mode 0600)::

    DIR/key          private key (OpenSSH format)      DIR/tls.key   the same key, PKCS#8 PEM
    DIR/cert.pub     SSH host certificate              DIR/tls.crt   X.509 host certificate
    DIR/ca.pem       host TLS CA (verifies auth)       DIR/user_ca.pub  SSH user CA (sshd trust)
    DIR/identity.json  host id, cluster, auth address, expiry
"""

from __future__ import annotations

from pathlib import Path

import click

from bastion.agent.join import join_cluster
from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.render import print_json
from bastion.errors import BadParameter

__all__ = ["main"]


@click.group()
@click.version_option(package_name="bastion")
def main() -> None:
    """Machine identity for agents and bots."""


@main.command()
@click.option("--auth", "auth_addr", required=True, help="HOST:PORT of the auth server.")
@click.option("--token", required=True, help="Join token (bctl tokens add).")
@click.option(
    "--ca-pin", default=None, help="sha256:... of the cluster CA (bastion start prints it)."
)
@click.option("--insecure", is_flag=True, help="Do not verify the server (development only!).")
@click.option("--name", "host_name", required=True, help="Host name of this machine.")
@click.option("--dest", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--role", type=click.Choice(["node", "db", "app", "bot"]), default="node", show_default=True
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def join(
    auth_addr: str,
    token: str,
    ca_pin: str | None,
    insecure: bool,
    host_name: str,
    dest: str,
    role: str,
    fmt: str,
) -> None:
    """Join the cluster with a token and write the host identity to --dest."""
    if not ca_pin and not insecure:
        raise BadParameter(
            "pass --ca-pin=sha256:... (printed by bastion start and bctl tokens "
            "add), or --insecure for development only"
        )
    if insecure and not ca_pin:
        click.secho(
            "WARNING: --insecure: the auth server is NOT verified; the join token can be "
            "stolen by anyone on the network path. Development only.",
            err=True,
            fg="red",
            bold=True,
        )
    ident = run_async(join_cluster(auth_addr, token, ca_pin, insecure, host_name, role, Path(dest)))
    info = {
        "host_id": ident.host_id,
        "host_name": ident.host_name,
        "role": ident.role,
        "cluster": ident.cluster,
        "auth": auth_addr,
        "expires": ident.expires,
        "dest": str(ident.dir.resolve()),
    }
    if fmt == "json":
        print_json(info)
    else:
        click.echo(
            f"Joined {info['cluster']} as {role} {host_name} (host id {info['host_id']}); "
            f"identity in {info['dest']}, valid until {info['expires']}."
        )
