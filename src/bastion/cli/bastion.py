"""``bastion``: the daemon. ``bastion start`` runs the all-in-one cluster; ``bastion configure``
prints a commented sample configuration."""

from __future__ import annotations

import asyncio
import sys

import click

from bastion.auth.service import AuthService
from bastion.cli.common import handle_errors
from bastion.config.schema import load_config, sample_config
from bastion.errors import BadParameter
from bastion.logging import configure_logging
from bastion.process import run

__all__ = ["main"]


@click.group()
@click.version_option(package_name="bastion")
def main() -> None:
    """Bastion: zero-trust access plane (auth + proxy + agents)."""


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (bastion configure prints a sample).",
)
@click.option("--data-dir", default="", help="Data directory (default ./bastion-data).")
@click.option("--cluster-name", default="", help="Cluster name (default: host name).")
@click.option("--auth-addr", default="", help="Auth API listen address (default 127.0.0.1:3025).")
@handle_errors
def start(config_path: str | None, data_dir: str, cluster_name: str, auth_addr: str) -> None:
    """Start the cluster (all-in-one on embedded SQLite when there is no config)."""
    config = load_config(config_path, data_dir=data_dir, cluster_name=cluster_name)
    if auth_addr:
        try:
            config.auth_service.listen_addr = auth_addr  # validated on assignment
        except ValueError as exc:
            raise BadParameter(f"--auth-addr: {exc}") from None
    configure_logging(config.log.level, config.log.format)
    asyncio.run(run(config, _print_next_steps))


def _print_next_steps(service: AuthService, created: list[str]) -> None:
    host, port = service.addr
    data_dir = service.config.data_path()
    pref_note = ""
    if service.config.auth_service.second_factor == "off":
        pref_note = (
            "\nWARNING: second_factor is off: passwords alone protect this cluster. "
            "This is INSECURE; use it for development only.\n"
        )
    click.echo(
        f"""
Bastion is running. Cluster: {service.server.cluster}
  auth API:  https://{host}:{port}   (mTLS; login, invite and join are public)
  data dir:  {data_dir}
  CA pin:    {service.ca_pin}
{"  first start: created " + ", ".join(created) if created else ""}{pref_note}
Next steps (in another terminal):
  1. Create the first admin and get a one-time invite:
       bctl --data-dir {data_dir} users add admin --roles=editor,access --logins=root,$USER
  2. Accept the invite: set a password and enrol TOTP (any authenticator app):
       bsh login --proxy={host}:{port} --invite=TOKEN --ca-pin={service.ca_pin}
  3. Look around:
       bctl get roles        bctl audit search --since 1h
""",
        err=False,
    )
    sys.stdout.flush()


@main.command()
def configure() -> None:
    """Print a commented sample configuration (redirect it to a file)."""
    click.echo(sample_config(), nl=False)
