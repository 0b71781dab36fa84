"""``bsh``: the user CLI. The group and the light commands (``status``, ``logout``, ``switch``,
``completion``) live here; every other command lives in its own module and is imported only when
it runs (:class:`bastion.cli.lazy.LazyGroup`), so ``bsh --help`` and ``bsh status`` load neither
aiohttp, asyncssh, pydantic nor cryptography.

Layer: client edge. Profiles live in ``$BSH_HOME`` (default ``~/.bsh``); see
:mod:`bastion.client.profile`.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import click

from bastion.cli.common import emit_json, handle_errors
from bastion.cli.lazy import LazyCommand, LazyGroup
from bastion.client.profile import Profile, ProfileStore
from bastion.errors import AuthenticationFailed, NotFound

__all__ = ["format_duration", "main", "print_profile"]

SSH = "bastion.cli.bsh_ssh"
LAZY = {
    "login": LazyCommand(
        "bastion.cli.bsh_login", "login", "Log in (or accept an invite) and save certificates."
    ),
    "ls": LazyCommand(
        "bastion.cli.bsh_ls", "ls_command", "List the nodes you may reach (labels k=v, words)."
    ),
    "clusters": LazyCommand(
        "bastion.cli.bsh_clusters", "clusters_command", "List the leaf clusters you may reach."
    ),
    "ssh": LazyCommand(SSH, "ssh_command", "Open a shell or run a command on [LOGIN@]NODE."),
    "scp": LazyCommand(SSH, "scp_command", "Copy files to and from nodes."),
    "config": LazyCommand(
        SSH, "config_command", "Print an OpenSSH config block (ssh NODE.CLUSTER)."
    ),
    "proxy": LazyCommand(SSH, "proxy_group", "Carry protocols for other clients (ProxyCommand)."),
    "recordings": LazyCommand(
        "bastion.cli.bsh_recordings", "recordings_group", "List and download session recordings."
    ),
    "play": LazyCommand(
        "bastion.cli.bsh_recordings", "play_command", "Play a session recording in this terminal."
    ),
    "db": LazyCommand(
        "bastion.cli.bsh_db", "db_group", "Database certificates for psql (bsh db login NAME)."
    ),
    "mfa": LazyCommand("bastion.cli.bsh_mfa", "mfa_group", "Manage your MFA devices."),
    "apps": LazyCommand(
        "bastion.cli.bsh_apps", "apps_group", "Internal web apps (bsh apps login NAME)."
    ),
    "request": LazyCommand(
        "bastion.cli.bsh_request", "request_group", "Ask for, review and assume access requests."
    ),
    "device": LazyCommand(
        "bastion.cli.bsh_device", "device_group", "Enroll this machine as a trusted device."
    ),
    "sessions": LazyCommand(
        "bastion.cli.bsh_sessions", "sessions_group", "List and terminate live sessions."
    ),
    "join": LazyCommand(
        "bastion.cli.bsh_sessions", "join_command", "Join a live session (observer/peer/moderator)."
    ),
}


def _home_option(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ["BSH_HOME"] = value


@click.group(cls=LazyGroup, lazy=LAZY)
@click.version_option(package_name="bastion")
@click.option(
    "--home",
    default=None,
    expose_value=False,
    is_eager=True,
    callback=_home_option,
    help="Profile directory (default: $BSH_HOME or ~/.bsh).",
)
def main() -> None:
    """Log in to a Bastion cluster and use it.

    \b
    Examples:
      bsh login --proxy=bastion.example.com:3080 --user=alice
      bsh ls env=prod
      bsh ssh root@web1 uptime
      bsh status
    """


def format_duration(seconds: float) -> str:
    """``1m``, ``59s``, ``2h5m``, ``3d4h``: the largest two units, no zero padding (pure)."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def _valid(profile: Profile) -> str:
    try:
        expires = datetime.fromisoformat(profile.expires)
    except ValueError:
        return f"{profile.expires} [EXPIRED]"
    shown = expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if profile.expired():
        return f"{shown} [EXPIRED]"
    left = (expires - datetime.now(UTC)).total_seconds()
    return f"{shown} [valid for {format_duration(left)}]"


def print_profile(profile: Profile, current: bool) -> None:
    """The profile block of ``bsh status`` and ``bsh login``."""
    click.echo(
        f"{'>' if current else ' '} Profile URL:  https://{profile.proxy}\n"
        f"  Logged in as: {profile.user}\n"
        f"  Cluster:      {profile.cluster}\n"
        f"  Roles:        {', '.join(profile.roles or []) or '-'}\n"
        f"  Logins:       {', '.join(profile.logins or []) or '-'}\n"
        f"  Valid until:  {_valid(profile)}\n"
        f"  Profile dir:  {profile.dir}"
    )


def _current(store: ProfileStore) -> str | None:
    try:
        return store.current_name()
    except NotFound:
        return None


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def status(fmt: str) -> None:
    """Show every profile; the current one is marked with >.

    Exits 0 when the current profile is valid, 4 when logged out, 3 when it has expired
    (scripts can test ``bsh status >/dev/null``).

    \b
    Examples:
      bsh status
      bsh status --format=json | jq .current
    """
    store = ProfileStore()
    current = _current(store)
    profiles = [store.load(n) for n in store.names()]
    if fmt == "json":
        emit_json(
            {
                "current": current,
                "profiles": [
                    {
                        "name": p.name,
                        "proxy": p.proxy,
                        "user": p.user,
                        "cluster": p.cluster,
                        "roles": p.roles or [],
                        "logins": p.logins or [],
                        "valid_until": p.expires,
                        "expired": p.expired(),
                        "current": p.name == current,
                        "dir": p.dir,
                    }
                    for p in profiles
                ],
            }
        )
    elif not profiles:
        click.echo("Not logged in. Run bsh login --proxy=HOST:PORT --user=NAME")
    else:
        for i, profile in enumerate(profiles):
            if i:
                click.echo()
            print_profile(profile, current=profile.name == current)
    active = next((p for p in profiles if p.name == current), None)
    if active is None:
        sys.exit(NotFound.exit_code)
    if active.expired():
        sys.exit(AuthenticationFailed.exit_code)


@main.command()
@click.option("--all", "everything", is_flag=True, help="Remove every profile.")
@handle_errors
def logout(everything: bool) -> None:
    """Delete the current profile's keys and certificates (or all of them).

    The CA pins of the clusters stay (~/.bsh/known_clusters.json): logging in again to the
    same address needs no --ca-pin.

    \b
    Examples:
      bsh logout
      bsh logout --all
    """
    store = ProfileStore()
    names = store.names() if everything else [n for n in [_current(store)] if n]
    if not names:
        click.echo("Not logged in.")
        return
    for name in names:
        store.remove(name)
        click.echo(f"Logged out of {name}.")


@main.command()
@click.argument("name")
@handle_errors
def switch(name: str) -> None:
    """Make the profile NAME the current one.

    \b
    Example:
      bsh switch prod.example.com
    """
    from bastion.files import write_private_file  # tempfile: not for bsh --help and status

    store = ProfileStore()
    if name not in store.names():
        raise NotFound(f"no profile {name!r}; bsh status lists them")
    write_private_file(store.home / "current", name)
    click.echo(f"Switched to {name}.")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      bsh completion bash > ~/.local/share/bash-completion/completions/bsh
      bsh completion zsh > "${fpath[1]}/_bsh"
      bsh completion fish > ~/.config/fish/completions/bsh.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the choice allows only shells click knows
    click.echo(cls(main, {}, "bsh", "_BSH_COMPLETE").source())
