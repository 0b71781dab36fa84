"""``bastion``: the daemon. ``bastion start`` runs the all-in-one cluster; ``bastion configure``
prints a commented sample configuration."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from bastion.cli.common import handle_errors
from bastion.config.schema import load_config, sample_config
from bastion.errors import BadParameter, ConnectionProblem
from bastion.logging import configure_logging
from bastion.process import Ready, run
from bastion.runtime import run as run_loop
from bastion.runtime import tune_runtime

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
@click.option("--proxy-addr", default="", help="Proxy listen address (default 127.0.0.1:3080).")
@click.option("--node-name", default="", help="Name of this host's SSH node (default: host name).")
@click.option(
    "--roles",
    default="",
    help="Services to run, comma-separated: auth, proxy, node, db (default: the config's; "
    "e.g. --roles=proxy --auth=HOST:3025 for a proxy in its own process).",
)
@click.option(
    "--auth",
    "auth_server",
    default="",
    help="A proxy in its own process: the auth server(s), HOST:3025[,HOST:3025].",
)
@handle_errors
def start(
    config_path: str | None,
    data_dir: str,
    cluster_name: str,
    auth_addr: str,
    proxy_addr: str,
    node_name: str,
    roles: str,
    auth_server: str,
) -> None:
    """Start the cluster (all-in-one on embedded SQLite when there is no config)."""
    config = load_config(config_path, data_dir=data_dir, cluster_name=cluster_name)
    if roles:
        chosen = {r.strip() for r in roles.split(",") if r.strip()}
        unknown = chosen - {"auth", "proxy", "node", "db", "app"}
        if unknown or not chosen:
            raise BadParameter(f"--roles: choose from auth, proxy, node, db, app (got {roles!r})")
        config.auth_service.enabled = "auth" in chosen
        config.proxy_service.enabled = "proxy" in chosen
        config.ssh_service.enabled = "node" in chosen
        config.db_service.enabled = "db" in chosen
        config.app_service.enabled = "app" in chosen
    overrides = (
        ("--auth-addr", config.auth_service, "listen_addr", auth_addr),
        ("--proxy-addr", config.proxy_service, "listen_addr", proxy_addr),
        ("--node-name", config.ssh_service, "node_name", node_name),
        ("--auth", config.proxy_service, "auth_server", auth_server),
    )
    for flag, section, field, value in overrides:
        if not value:
            continue
        try:  # assignments are validated
            setattr(section, field, value)
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise BadParameter(f"{flag}: {problems}") from None
    lock = lock_data_dir(config.data_path())  # held until the process exits
    configure_logging(config.log.level, config.log.format)
    tune_runtime()
    try:
        run_loop(run(config, _print_next_steps))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConnectionProblem(address_in_use(exc)) from None
    finally:
        os.close(lock)


def lock_data_dir(path: Path) -> int:
    """One daemon per data dir: a second ``bastion start`` on it would rewrite the running
    one's TLS and admin identities before failing on the ports. Returns the locked fd."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BadParameter(
            f"another bastion is running with the data dir {path} (it holds "
            f"{path / LOCK_FILE}): stop it first, or give this one another --data-dir"
        ) from None
    return fd


def address_in_use(exc: OSError) -> str:
    """What to do when a listen address is taken (often: another bastion already runs)."""
    found = re.search(r"\('([^']*)', (\d+)", str(exc))
    where = f" {found.group(1)}:{found.group(2)}" if found else ""
    return (
        f"cannot listen on{where}: the address is already in use. Is another bastion running? "
        "Stop it, or choose free ports with --auth-addr and --proxy-addr "
        "(auth_service.listen_addr and proxy_service.listen_addr in the config)"
    )


LOCK_FILE = "bastion.lock"

PASSWORD_ONLY_WARNING = {
    "off": "WARNING: INSECURE: second_factor is off: a password alone logs in to this cluster. "
    "Anyone who phishes or guesses one password gets certificates. Use it for development "
    "only; set second_factor: on (auth_service.second_factor, or the cluster_auth_preference).",
    "optional": "WARNING: second_factor is optional: users without an MFA device log in with a "
    "password alone. Set second_factor: on once everyone has registered a device.",
}


INVITE_STEP = {
    "on": "set a password and register the second factor, a TOTP app\n"
    "     (scan the otpauth:// URI bsh prints) or, with --mfa=webauthn, a security key:",
    "webauthn": "set a password and register your security key (the cluster requires one):",
    "otp": "set a password and register a TOTP app (scan the otpauth:// URI bsh prints):",
    "optional": "set a password (a second factor can be added later with bsh mfa add):",
    "off": "set a password:",
}
"""Step 2 of the next steps: what accepting an invite registers under each second_factor."""


def _warn_password_only(mode: str) -> None:
    """Loud (red, bold, on stderr as well as in the summary): password-only logins allowed."""
    bar = "!" * 78
    click.secho(f"{bar}\n{PASSWORD_ONLY_WARNING[mode]}\n{bar}", err=True, fg="red", bold=True)


def _print_next_steps(ready: Ready) -> None:
    if ready.auth_addr is None and ready.proxy_addr is not None:
        host, port = ready.proxy_addr
        click.echo(f"Bastion proxy listening on {host}:{port} for cluster {ready.cluster}.")
        sys.stdout.flush()
        return
    if ready.auth_addr is None:
        click.echo(f"Bastion SSH node {ready.node_name!r} joined cluster {ready.cluster}.")
        sys.stdout.flush()
        return
    auth_host, auth_port = ready.auth_addr
    login = f"{auth_host}:{auth_port}"
    lines = [
        "",
        f"Bastion is running. Cluster: {ready.cluster}",
        f"  auth API:  https://{auth_host}:{auth_port}   (mTLS for bctl and agents)",
    ]
    if ready.proxy_addr is not None:
        login = f"{ready.proxy_addr[0]}:{ready.proxy_addr[1]}"
        lines.append(f"  proxy:     https://{login}   (web, API, SSH and agent tunnels)")
    if ready.node_name:
        lines.append(f"  SSH node:  {ready.node_name} (this host)")
    lines += [f"  data dir:  {ready.data_dir}", f"  CA pin:    {ready.ca_pin}"]
    if ready.created:
        lines.append("  first start: created " + ", ".join(ready.created))
    if ready.second_factor in ("off", "optional"):
        _warn_password_only(ready.second_factor)
        lines.append(f"\n{PASSWORD_ONLY_WARNING[ready.second_factor]}")
    lines.append(
        f"""
Next steps (in another terminal):
  1. Create the first admin and get a one-time invite:
       bctl --data-dir {ready.data_dir} users add admin --roles=editor,access --logins=root,$USER
  2. Accept the invite: {INVITE_STEP.get(ready.second_factor, INVITE_STEP["on"])}
       bsh login --proxy={login} --invite=TOKEN --ca-pin={ready.ca_pin}{
            " --mfa=webauthn" if ready.second_factor == "webauthn" else ""
        }
  3. Look around and connect:
       bsh ls        bsh ssh root@{ready.node_name or "NODE"}        bctl audit search --since 1h
"""
    )
    click.echo("\n".join(lines))
    sys.stdout.flush()


@main.command()
def configure() -> None:
    """Print a commented sample configuration (redirect it to a file)."""
    click.echo(sample_config(), nl=False)
