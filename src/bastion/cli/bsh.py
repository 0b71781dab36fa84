"""``bsh``: the user CLI. This issue's part: ``login`` (password + TOTP, or an invite), ``status``,
``logout`` and ``switch``.

Layer: client edge. The private key is generated here and never leaves the machine; the server is
verified against the cluster CA, which is itself checked against ``--ca-pin`` (or the CA saved by
an earlier login) before any secret is sent. Profiles live in ``$BSH_HOME`` (default ``~/.bsh``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
from cryptography.hazmat.primitives import serialization

from bastion.cli import bsh_mfa
from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async, verified_context
from bastion.cli.render import print_json
from bastion.client.api import AuthClient, fetch_cluster_ca, spki_pin_of_pem
from bastion.client.profile import Profile, ProfileStore, new_client_key
from bastion.client.sso import sso_login
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.files import write_private_file

__all__ = ["check_user_flag", "main"]

INSECURE_WARNING = (
    "WARNING: --insecure: the server's identity is NOT verified. Anyone on the network path can "
    "impersonate the cluster and capture your password. Use --ca-pin outside development."
)


@click.group()
@click.version_option(package_name="bastion")
def main() -> None:
    """Log in to a Bastion cluster and use it."""


class Secrets:
    """Where the password and the TOTP code come from: --otp, stdin lines, or the terminal."""

    def __init__(self, password_stdin: bool, otp: str | None, stdin: TextIO) -> None:
        self.password_stdin = password_stdin
        self.otp = otp
        self._stdin = stdin

    def _line(self, what: str) -> str:
        line = self._stdin.readline()
        if not line:
            raise BadParameter(f"--password-stdin: expected the {what} on stdin, got end of input")
        return line.rstrip("\r\n")

    def _need_tty(self, what: str) -> None:
        if not self._stdin.isatty():
            raise BadParameter(
                f"no terminal to ask for the {what}: use --password-stdin"
                + (" (and --otp)" if what == "TOTP code" else "")
            )

    def password(self, confirm: bool) -> str:
        if self.password_stdin:
            return self._line("password (first line)")
        self._need_tty("password")
        value: str = click.prompt(
            "Password", hide_input=True, confirmation_prompt=confirm, err=True
        )
        return value

    def otp_code(self) -> str:
        if self.otp:
            return self.otp
        if self.password_stdin:
            return self._line("TOTP code (second line)").strip()
        self._need_tty("TOTP code")
        value: str = click.prompt("Enter the 6-digit code from your authenticator app", err=True)
        return value.strip()


def _ping(proxy: str, ca_pin: str | None, insecure: bool, store: ProfileStore) -> dict[str, Any]:
    """The cluster's ping document, its CA checked against ``--ca-pin`` or the pins an earlier
    verified login to this address recorded (kept by logout)."""
    if ca_pin or insecure:
        if insecure and not ca_pin:
            click.secho(INSECURE_WARNING, err=True, fg="red", bold=True)
        return run_async(fetch_cluster_ca(proxy, ca_pin, insecure and not ca_pin))
    trusted = store.trusted_pins(proxy)
    if not trusted:
        return run_async(fetch_cluster_ca(proxy, None, False))  # raises: says to pass --ca-pin
    try:
        return run_async(fetch_cluster_ca(proxy, trusted, False))
    except BadParameter:
        raise AccessDenied(
            f"the server at {proxy} is not the cluster you logged in to before (its CA changed): "
            "this may be an attack; if the cluster was re-created, log in with the new --ca-pin "
            "from your admin (bastion start and bctl status print it)"
        ) from None


def _login_flow(
    client: AuthClient,
    invite: str | None,
    user: str | None,
    secrets: Secrets,
    second_factor: str,
    public_key: str,
    ttl: str,
    *,
    auth: str = "local",
    mfa: str = "auto",
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    profile_dir = profile_dir or Path(".")

    async def run() -> dict[str, Any]:
        async with client:
            if auth == "passwordless":
                return await bsh_mfa.passwordless_login(client, public_key, ttl, profile_dir)
            if invite:
                info = await client.call("POST", "/v1/invites/start", {"token": invite})
                use_key = mfa == "webauthn" or info.get("second_factor") == "webauthn"
                if use_key:
                    click.echo(f"Setting the password of {info['user']}.", err=True)
                    password = secrets.password(confirm=True)
                    registration = await bsh_mfa.invite_webauthn(client, invite, profile_dir)
                    body = {
                        "token": invite,
                        "password": password,
                        "webauthn": registration,
                        "public_key": public_key,
                        "ttl": ttl,
                    }
                    certs: dict[str, Any] = await client.call("POST", "/v1/invites/complete", body)
                    return certs
                if info["otp_required"]:
                    click.echo(
                        f"Add this to your authenticator app (scan or paste):\n  {info['otp_uri']}"
                        f"\n  secret: {info['otp_secret']}",
                        err=True,
                    )
                    sys.stderr.flush()
                click.echo(f"Setting the password of {info['user']}.", err=True)
                password = secrets.password(confirm=True)
                otp = secrets.otp_code() if info["otp_required"] else ""
                body = {
                    "token": invite,
                    "password": password,
                    "otp": otp,
                    "public_key": public_key,
                    "ttl": ttl,
                }
                certs = await client.call("POST", "/v1/invites/complete", body)
                return certs
            assert user is not None
            password = secrets.password(confirm=False)
            body = {"user": user, "password": password, "public_key": public_key, "ttl": ttl}
            if second_factor == "off" and not secrets.otp:
                certs = await client.call("POST", "/v1/login", body)
                return certs
            return await bsh_mfa.login_second_factor(
                client, body, mfa, secrets.otp_code, profile_dir
            )

    return run_async(run())


def _sso_flow(
    client: AuthClient, proxy: str, connector: str, public_key: str, ttl: str, headless: bool
) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with client:
            return await sso_login(
                client,
                proxy,
                connector,
                public_key,
                ttl,
                headless=headless,
                say=lambda text: click.echo(text, err=True),
            )

    return run_async(run())


def check_user_flag(user: str | None, invite: str | None, auth_name: str | None) -> None:
    """``--user`` names a local account for a password login; elsewhere it would be ignored
    silently (the invite, the passkey or the IdP says who you are), so it is refused."""
    if not user:
        return
    if invite:
        raise BadParameter("--user is not used with --invite: the invite names the account")
    if auth_name == "passwordless":
        raise BadParameter(
            "--user is not used with --auth=passwordless: the passkey names the account"
        )
    if auth_name and auth_name != "local":
        raise BadParameter(f"--user is not used with --auth={auth_name}: the IdP names you")


@main.command()
@click.option("--proxy", required=True, help="HOST:PORT of the cluster's login endpoint.")
@click.option(
    "--user", default=None, help="Your user name (not with --invite or --auth=passwordless)."
)
@click.option("--invite", default=None, help="One-time invite token from your admin.")
@click.option("--ca-pin", default=None, help="sha256:... as printed by bastion start.")
@click.option("--insecure", is_flag=True, help="Do not verify the server (development only!).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin (the TOTP code from the next).",
)
@click.option("--otp", default=None, help="The current TOTP code.")
@click.option("--ttl", default="12h", show_default=True, help="Requested certificate lifetime.")
@click.option(
    "--auth",
    "auth_name",
    default=None,
    help="local (password + second factor, the default), passwordless (a passkey, no "
    "password), or the SSO connector NAME (OIDC, SAML or GitHub) in the browser.",
)
@click.option(
    "--headless",
    is_flag=True,
    help="With --auth: print a URL to open on another machine instead of opening a browser.",
)
@click.option(
    "--mfa",
    type=click.Choice(["auto", "webauthn", "otp"]),
    default="auto",
    show_default=True,
    help="Second factor: a security key (webauthn) or a TOTP app; auto picks the key when "
    "the account has one and a key is present. With --invite: what to register (TOTP unless "
    "webauthn).",
)
@click.option(
    "--software-authenticator",
    "software",
    default=None,
    help="Use (and remember) Bastion's software authenticator with this credential file "
    "(tests and headless machines; the cluster must allow it).",
)
@handle_errors
def login(
    proxy: str,
    user: str | None,
    invite: str | None,
    ca_pin: str | None,
    insecure: bool,
    password_stdin: bool,
    otp: str | None,
    ttl: str,
    auth_name: str | None,
    headless: bool,
    mfa: str,
    software: str | None,
) -> None:
    """Log in (or accept an invite) and save short-lived certificates in a profile."""
    sso = bool(auth_name) and auth_name not in ("local", "passwordless")
    if headless and not sso:
        raise BadParameter("--headless works with --auth=CONNECTOR (an SSO login)")
    check_user_flag(user, invite, auth_name)
    if not invite and not user and not sso and auth_name != "passwordless":
        raise BadParameter(
            "pass --user=NAME (or --invite=TOKEN to accept an invite, or --auth=passwordless)"
        )
    store = ProfileStore()
    ping = _ping(proxy, ca_pin, insecure, store)
    profile_dir = store.home / "profiles" / str(ping["cluster"])
    bsh_mfa.enable_software_authenticator(software, profile_dir)
    ctx = verified_context(ping["tls_host_ca"])
    key = new_client_key()
    public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    if sso:
        certs = _sso_flow(AuthClient(proxy, ctx), proxy, str(auth_name), public_key, ttl, headless)
    else:
        secrets = Secrets(password_stdin, otp, sys.stdin)
        certs = _login_flow(
            AuthClient(proxy, ctx),
            invite,
            user,
            secrets,
            str(ping.get("second_factor", "")),
            public_key,
            ttl,
            auth=auth_name or "local",
            mfa=mfa,
            profile_dir=profile_dir,
        )
    cluster = str(certs.get("cluster") or ping["cluster"])
    profile = Profile(
        name=cluster,
        proxy=proxy,
        user=str(certs["user"]),
        cluster=cluster,
        expires=str(certs["expires"]),
        roles=list(certs.get("roles") or []),
        logins=list(certs.get("logins") or []),
    )
    store.save(profile, key, certs)
    # Remember the CA for the next login to this address, unless nothing verified it; the
    # bundle came over the verified connection (it carries new CAs during a rotation).
    verified = bool(ca_pin) or not insecure
    pins = spki_pin_of_pem(str(certs["tls_host_ca"])) if verified else None
    store.remember_cluster(proxy, cluster, pins)
    _print_profile(profile, current=True)


def _valid(profile: Profile) -> str:
    if profile.expired():
        return f"{profile.expires} [EXPIRED]"
    left = datetime.fromisoformat(profile.expires) - datetime.now(UTC)
    hours, rest = divmod(int(left.total_seconds()), 3600)
    return f"{profile.expires} [valid for {hours}h{rest // 60}m]"


def _print_profile(profile: Profile, current: bool) -> None:
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
    """Show every profile; the current one is marked with >."""
    store = ProfileStore()
    current = _current(store)
    profiles = [store.load(n) for n in store.names()]
    if fmt == "json":
        print_json(
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
        return
    if not profiles:
        click.echo("Not logged in. Run bsh login --proxy=HOST:PORT --user=NAME")
        return
    for i, profile in enumerate(profiles):
        if i:
            click.echo()
        _print_profile(profile, current=profile.name == current)


@main.command()
@click.option("--all", "everything", is_flag=True, help="Remove every profile.")
@handle_errors
def logout(everything: bool) -> None:
    """Delete the current profile's keys and certificates (or all of them).

    The CA pins of the clusters stay (~/.bsh/known_clusters.json): logging in again to the
    same address needs no --ca-pin.
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
    """Make the profile NAME the current one."""
    store = ProfileStore()
    if name not in store.names():
        raise NotFound(f"no profile {name!r}; bsh status lists them")
    write_private_file(store.home / "current", name)
    click.echo(f"Switched to {name}.")


# The SSH commands (ls, ssh, scp, config, proxy ssh) live in their own module.
from bastion.cli.bsh_ssh import register as _register_ssh  # noqa: E402

_register_ssh(main)

# Session recordings (recordings ls/download, play) live in their own module.
from bastion.cli.bsh_recordings import register as _register_recordings  # noqa: E402

_register_recordings(main)
bsh_mfa.register(main)
