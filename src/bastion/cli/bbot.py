"""``bbot``: machine identity. ``bbot join`` exchanges a single-use join token for a host
identity (SSH host certificate + X.509 host certificate) for a key generated here.

Layer: client edge. Output directory (every file mode 0600)::

    DIR/key          private key (OpenSSH format)      DIR/tls.key   the same key, PKCS#8 PEM
    DIR/cert.pub     SSH host certificate              DIR/tls.crt   X.509 host certificate
    DIR/ca.pem       host TLS CA (verifies auth)       DIR/user_ca.pub  SSH user CA (sshd trust)
    DIR/identity.json  host id, cluster, auth address, expiry

``bbot krl-sync --identity DIR --out /etc/ssh/bastion_krl`` keeps an agentless OpenSSH node's
``RevokedKeys`` file current (:mod:`bastion.agent.krl_sync`).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bastion.cli.common import handle_errors
from bastion.cli.render import print_json
from bastion.errors import BadParameter

if TYPE_CHECKING:
    from bastion.agent.remote import RemoteAuth

__all__ = ["main"]


@click.group()
@click.version_option(package_name="bastion")
def main() -> None:
    """Machine identity for agents and bots.

    \b
    Example:
      bbot join --auth=auth.example.com:3025 --token=TOKEN --ca-pin=sha256:... --name=web1
    """


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
    """Join the cluster with a token and write the host identity to --dest.

    \b
    Example:
      bbot join --auth=auth.example.com:3025 --token=TOKEN --ca-pin=sha256:... --name=web1
    """
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
    from bastion.agent.join import join_cluster  # lazily: bbot starts fast

    ident = asyncio.run(
        join_cluster(auth_addr, token, ca_pin, insecure, host_name, role, Path(dest))
    )
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


async def _published_krl(remote: RemoteAuth) -> dict[str, object]:
    from bastion.contract.core import KRL

    return (await remote.send(KRL)).model_dump()


@main.command("krl-sync")
@click.option(
    "--identity",
    "identity_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Host identity directory written by bbot join (role node).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The KRL file sshd reads (sshd_config RevokedKeys), e.g. /etc/ssh/bastion_krl.",
)
@click.option(
    "--trusted-ca",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="Verify the KRL signature with these user CA keys (default: IDENTITY/user_ca.pub; "
    "pass sshd's TrustedUserCAKeys file).",
)
@click.option("--status", "status_file", default=None, type=click.Path(dir_okay=False))
@click.option("--period", default=30.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--once", is_flag=True, help="One round, then exit (non-zero on failure): cron.")
@handle_errors
def krl_sync(
    identity_dir: str,
    out: str,
    trusted_ca: str | None,
    status_file: str | None,
    period: float,
    once: bool,
) -> None:
    """Keep sshd's RevokedKeys KRL current: locks reach agentless OpenSSH nodes.

    A failed round keeps the last KRL; the --status JSON file shows its version and age, and
    the log says STALE once it is older than 3 periods.

    \b
    Example:
      bbot krl-sync --identity /var/lib/bbot --out /etc/ssh/bastion_krl
    """
    from bastion.agent.join import load_host_identity
    from bastion.agent.krl_sync import KrlSync, load_trusted_keys
    from bastion.agent.remote import RemoteAuth
    from bastion.logging import configure_logging

    configure_logging("info", "text")
    ident = load_host_identity(Path(identity_dir))
    remote = RemoteAuth(ident, ident.server)
    ca_file = Path(trusted_ca) if trusted_ca else ident.dir / "user_ca.pub"
    sync = KrlSync(
        lambda: _published_krl(remote),
        load_trusted_keys(ca_file.read_text()),
        Path(out),
        Path(status_file) if status_file else None,
        period,
    )
    if once:
        status = asyncio.run(sync.sync_once())
        print_json(
            {k: v for k, v in asdict(status).items() if k not in ("key_ids", "unenforced_locks")}
        )
        if not status.ok:
            raise SystemExit(1)
        return
    asyncio.run(sync.run_forever())


@main.command("start")
@click.option("-c", "--config", "config_file", default=None, help="bbot.yaml (flags override).")
@click.option("--proxy", "--auth", "proxy", default=None, help="HOST:PORT of the proxy (or auth).")
@click.option("--ca-pin", default=None, help="sha256:... of the cluster CA.")
@click.option(
    "--insecure", is_flag=True, default=None, help="Do not verify the server (dev only!)."
)
@click.option("--token", default=None, help="Single-use join token (bctl bots add).")
@click.option("--join-method", type=click.Choice(["token", "oidc", "bound_keypair"]), default=None)
@click.option("--bot", default=None, help="With oidc or bound_keypair: the bot's name.")
@click.option(
    "--keypair", "keypair_file", default=None,
    help="With bound_keypair: the OpenSSH private key registered with bctl bots add.",
)  # fmt: skip
@click.option("--id-token-file", default=None, help="With oidc: a file holding the JWT.")
@click.option("--audience", default=None, help="With oidc in GitHub Actions: the audience.")
@click.option("--dest", default=None, help="Output directory (identity, ssh, x509, state).")
@click.option("--ttl", default=None, help="Certificate lifetime (default 1h).")
@click.option("--oneshot", is_flag=True, default=None, help="Join or renew once, then exit (CI).")
@click.option(
    "--database", "databases", multiple=True,
    help="Also write DEST/db-NAME (certificate + pg_service.conf): NAME[:DB_USER[:DB_NAME]].",
)  # fmt: skip
@click.option(
    "--app", "apps", multiple=True, help="Also write DEST/app-NAME (certificate for curl)."
)
@handle_errors
def start(config_file: str | None, **flags: object) -> None:
    """Join as a bot, then keep its certificates renewed in --dest (docs/machine-id.md).

    \b
    Examples:
      bbot start --proxy=proxy.example.com:3080 --ca-pin=sha256:... --token=T --dest=/var/lib/bbot
      ssh -F /var/lib/bbot/ssh/ssh_config deploy@web1.example.com
      bbot start -c bbot.yaml --oneshot
      bbot start -c bbot.yaml --database=orders:reader:orders --app=grafana
    """
    from bastion.cli.bbot_start import load_config, run_bot
    from bastion.logging import configure_logging

    configure_logging("info", "text")
    cfg = load_config(config_file, flags)
    if cfg.insecure and not cfg.ca_pin:
        click.secho("WARNING: --insecure: the server is NOT verified.", err=True, fg="red")
    asyncio.run(run_bot(cfg))
    if cfg.oneshot:
        click.echo(f"bot identity written to {cfg.dest}")
