"""``bbot``: machine identity. ``bbot join`` exchanges a single-use join token for a host
identity (SSH host certificate + X.509 host certificate) for a key generated here.

Layer: client edge. Output directory (every file mode 0600)::

    DIR/key          private key (OpenSSH format)      DIR/tls.key   the same key, PKCS#8 PEM
    DIR/cert.pub     SSH host certificate              DIR/tls.crt   X.509 host certificate
    DIR/ca.pem       host TLS CA (verifies auth)       DIR/user_ca.pub  SSH user CA (sshd trust)
    DIR/identity.json  host id, cluster, auth address, expiry
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from bastion.auth.service import write_private_file
from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async, verified_context
from bastion.cli.render import print_json
from bastion.client.api import AuthClient, fetch_cluster_ca
from bastion.client.profile import new_client_key
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
    ping = run_async(fetch_cluster_ca(auth_addr, ca_pin, insecure))
    key = new_client_key()
    public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    body = {"token": token, "host_name": host_name, "role": role, "public_key": public_key}

    async def call() -> dict[str, Any]:
        async with AuthClient(auth_addr, verified_context(ping["tls_host_ca"])) as client:
            certs: dict[str, Any] = await client.call("POST", "/v1/join", body)
            return certs

    certs = run_async(call())
    out = Path(dest)
    write_private_file(
        out / "key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    write_private_file(
        out / "tls.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private_file(out / "cert.pub", certs["ssh_cert"] + "\n")
    write_private_file(out / "tls.crt", certs["tls_cert"])
    write_private_file(out / "ca.pem", certs["tls_host_ca"])
    write_private_file(out / "user_ca.pub", "".join(f"{k}\n" for k in certs["ssh_user_ca"]))
    info = {
        "host_id": certs["host_id"],
        "host_name": host_name,
        "role": role,
        "cluster": ping["cluster"],
        "auth": auth_addr,
        "expires": certs["expires"],
        "dest": str(out.resolve()),
    }
    write_private_file(out / "identity.json", json.dumps(info, indent=2))
    if fmt == "json":
        print_json(info)
    else:
        click.echo(
            f"Joined {ping['cluster']} as {role} {host_name} (host id {info['host_id']}); "
            f"identity in {info['dest']}, valid until {info['expires']}."
        )
