"""``bsh mfa add|ls|rm`` and the WebAuthn parts of ``bsh login`` (second factor, passwordless,
invite with a security key).

Layer: client edge. The authenticator is :func:`bastion.client.mfa.solve`: a FIDO2 key over USB,
else the software authenticator named by ``$BSH_SOFTWARE_AUTHENTICATOR`` or the profile's
``mfa.json`` (``--software-authenticator PATH`` writes it). Changing devices when you already
have one needs a confirmation with an existing device (touch a key, or a TOTP code), so a stolen
certificate alone cannot add the thief's key.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.render import print_json
from bastion.client.api import AuthClient
from bastion.client.mfa import ENV_SOFTWARE, SETTINGS_FILE, origin_for, solve
from bastion.client.profile import Profile, ProfileStore
from bastion.client.tls import profile_context
from bastion.contract.core import LOGIN, Login
from bastion.contract.mfa import (
    ADD_DEVICE_BEGIN,
    ADD_DEVICE_FINISH,
    DEVICE_CHALLENGE,
    INVITE_WEBAUTHN,
    LIST_DEVICES,
    LOGIN_BEGIN,
    PASSWORDLESS,
    PASSWORDLESS_BEGIN,
    REMOVE_DEVICE,
    AddBegin,
    AddFinish,
    ChallengeScope,
    InviteWebAuthn,
    LoginBegin,
    Passwordless,
    Remove,
)
from bastion.errors import AuthenticationFailed, BadParameter, NotFound, RemoteProtocolError
from bastion.files import write_private_file

__all__ = [
    "enable_software_authenticator",
    "invite_webauthn",
    "login_second_factor",
    "passwordless_login",
]


def enable_software_authenticator(path: str | None, profile_dir: Path | None) -> None:
    """``--software-authenticator PATH``: use it in this process and remember it in the profile
    (``mfa.json``) so later commands find it without the option."""
    if not path:
        return
    resolved = str(Path(path).expanduser().resolve())
    os.environ[ENV_SOFTWARE] = resolved
    if profile_dir is not None:
        write_private_file(
            profile_dir / SETTINGS_FILE, json.dumps({"software_authenticator": resolved})
        )


# ---- login --------------------------------------------------------------------------------------


async def login_second_factor(
    client: AuthClient,
    body: dict[str, Any],
    mfa: str,
    otp_code: Callable[[], str],
    profile_dir: Path,
) -> dict[str, Any]:
    """Password login: ask the server which factor to send, then a key assertion or TOTP.

    Args:
        body: ``user``, ``password``, ``public_key``, ``ttl`` of ``/v1/login``.
        mfa: ``auto`` (a key when the account has one and an authenticator is present, else
            TOTP), ``webauthn`` or ``otp``.
        otp_code: asks for the TOTP code (only called when TOTP is used).
    """
    begin = await client.send(LOGIN_BEGIN, LoginBegin(user=body["user"], password=body["password"]))
    options = begin.webauthn
    if options and mfa != "otp":
        try:
            response = solve(options, origin_for(client.addr), profile_dir=profile_dir)
        except NotFound as exc:
            if mfa == "webauthn" or not begin.totp:
                raise
            click.echo(f"{exc}; using TOTP instead.", err=True)
        else:
            return (
                await client.send(LOGIN, Login.model_validate({**body, "webauthn": response}))
            ).model_dump()
    elif mfa == "webauthn":
        raise NotFound("this account has no security key registered: bsh mfa add")
    otp = otp_code() if begin.totp else ""
    return (await client.send(LOGIN, Login.model_validate({**body, "otp": otp}))).model_dump()


async def passwordless_login(
    client: AuthClient,
    public_key: str,
    ttl: str,
    profile_dir: Path,
    binding: dict[str, object] | None = None,
) -> dict[str, Any]:
    """``--auth=passwordless``: a passkey names the user; no password. ``binding``: the
    device proof and TPM-held key (``LoginKeys.fields``)."""
    begin = await client.send(PASSWORDLESS_BEGIN)
    response = solve(begin.webauthn, origin_for(client.addr), profile_dir=profile_dir)
    body = Passwordless.model_validate(
        {"webauthn": response, "public_key": public_key, "ttl": ttl, **(binding or {})}
    )
    return (await client.send(PASSWORDLESS, body)).model_dump()


async def invite_webauthn(client: AuthClient, token: str, profile_dir: Path) -> dict[str, Any]:
    """Register a security key for an invite; returns the registration response."""
    begin = await client.send(INVITE_WEBAUTHN, InviteWebAuthn(token=token))
    click.echo("Registering your security key (touch it when it blinks)...", err=True)
    return solve(begin.webauthn, origin_for(client.addr), profile_dir=profile_dir, create=True)


# ---- bsh mfa ------------------------------------------------------------------------------------


def _profile_client(profile: Profile) -> AuthClient:
    if profile.expired():
        raise AuthenticationFailed(
            f"your login to {profile.cluster} expired: run bsh login --proxy={profile.proxy} "
            f"--user={profile.user}"
        )
    return AuthClient(profile.proxy, profile_context(profile.path, profile.name, []))


def _read_code(otp: str | None, prompt: str, otp_flag: bool = True) -> str:
    """``--otp``, else a line of stdin (scripts), else a prompt. ``otp_flag``: whether --otp can
    carry this code (not for a new TOTP secret, which nobody knows before bsh prints it)."""
    if otp:
        return otp
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            how = "or pass --otp" if otp_flag else "write it after bsh printed the secret"
            raise BadParameter(f"expected the {prompt[:1].lower()}{prompt[1:]} on stdin ({how})")
        return line.strip()
    value: str = click.prompt(prompt, err=True)
    return value.strip()


async def _proof(
    client: AuthClient, profile: Profile, devices: list[dict[str, Any]], scope: str, otp: str | None
) -> dict[str, Any]:
    """Confirm a device change with an existing device (none needed for the first one)."""
    if not devices:
        return {}
    keys = [d for d in devices if d["type"] == "webauthn" and not d["cloned"]]
    has_totp = any(d["type"] == "totp" for d in devices)
    if keys and not otp:
        challenge = await client.send(DEVICE_CHALLENGE, ChallengeScope(scope=scope))
        click.echo("Confirm with one of your registered security keys...", err=True)
        try:
            response = solve(
                challenge.webauthn, origin_for(profile.proxy), profile_dir=profile.path
            )
            return {"webauthn": response}
        except NotFound:
            if not has_totp:
                raise
    if has_totp:
        return {"otp": _read_code(otp, "Code from your authenticator app (to confirm)")}
    raise NotFound("no usable MFA device to confirm this change with")


def _next_name(devices: list[dict[str, Any]], kind: str) -> str:
    base = "otp" if kind == "totp" else "key"
    names = {d["name"] for d in devices}
    if base not in names:
        return base
    n = 2
    while f"{base}{n}" in names:
        n += 1
    return f"{base}{n}"


@click.group("mfa")
def mfa_group() -> None:
    """Your second factors: security keys and passkeys (WebAuthn) and TOTP apps.

    \b
    Examples:
      bsh mfa ls
      bsh mfa add --name=yubikey
    """


@mfa_group.command("ls")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def ls_command(fmt: str) -> None:
    """List your MFA devices.

    \b
    Examples:
      bsh mfa ls
      bsh mfa ls --format json
    """
    profile = ProfileStore().load()

    async def go() -> list[dict[str, Any]]:
        async with _profile_client(profile) as client:
            data = await client.send(LIST_DEVICES)
        return [d.model_dump() for d in data.devices]

    devices = run_async(go())
    if fmt == "json":
        print_json(devices)
        return
    if not devices:
        click.echo("No MFA devices. Add one: bsh mfa add")
        return
    click.echo(f"{'Name':<20} {'Type':<9} {'Passkey':<8} {'Added':<20} {'Last used':<20} Notes")
    for d in devices:
        notes = ", ".join(
            n for n, on in (("software", d["software"]), ("CLONED: refused", d["cloned"])) if on
        )
        click.echo(
            f"{d['name']:<20} {d['type']:<9} {'yes' if d['passkey'] else 'no':<8} "
            f"{d['added'][:19]:<20} {(d['last_used'] or '-')[:19]:<20} {notes}"
        )


@mfa_group.command("add")
@click.option("--name", default="", help="A name for the device (default key, key2, ... or otp).")
@click.option(
    "--type", "kind", type=click.Choice(["webauthn", "totp"]), default="webauthn", show_default=True
)
@click.option("--passwordless", is_flag=True, help="Register a passkey (discoverable credential).")
@click.option("--otp", default=None, help="A TOTP code to confirm with your existing TOTP device.")
@click.option(
    "--software-authenticator",
    "software",
    default=None,
    help="Use (and remember) Bastion's software authenticator with this credential file.",
)
@handle_errors
def add_command(name: str, kind: str, passwordless: bool, otp: str | None, software: str) -> None:
    """Register a security key / passkey (default) or a TOTP app.

    \b
    Examples:
      bsh mfa add --name=yubikey
      bsh mfa add --name=laptop --passwordless
      bsh mfa add --type=totp --name=phone
    """
    profile = ProfileStore().load()
    enable_software_authenticator(software, profile.path)

    async def go() -> dict[str, Any]:
        async with _profile_client(profile) as client:
            devices = [d.model_dump() for d in (await client.send(LIST_DEVICES)).devices]
            device_name = name or _next_name(devices, kind)
            proof = await _proof(client, profile, devices, "mfa:add", otp)
            begin = await client.send(
                ADD_DEVICE_BEGIN,
                AddBegin.model_validate({"type": kind, "passwordless": passwordless}),
            )
            body: dict[str, Any] = {"type": kind, "name": device_name, "proof": proof}
            if kind == "totp":
                totp = begin.totp
                if totp is None:
                    raise RemoteProtocolError("the server sent no TOTP secret")
                click.echo(
                    f"Add this to your authenticator app (scan or paste):\n  {totp.uri}\n"
                    f"  secret: {totp.secret}",
                    err=True,
                )
                sys.stderr.flush()
                body.update(
                    enrolment=totp.enrolment,
                    code=_read_code(
                        None, "Code shown by the app for the new secret", otp_flag=False
                    ),
                )
            else:
                click.echo("Touch the new security key to register it...", err=True)
                body["webauthn"] = solve(
                    begin.webauthn or {},
                    origin_for(profile.proxy),
                    profile_dir=profile.path,
                    create=True,
                )
            added = await client.send(ADD_DEVICE_FINISH, AddFinish.model_validate(body))
            return added.model_dump()

    device = run_async(go())
    extra = [
        w for w, on in (("passkey", device["passkey"]), ("software", device["software"])) if on
    ]
    click.echo(
        f"MFA device {device['name']!r} added ({device['type']}"
        + (", " + ", ".join(extra) if extra else "")
        + ")."
    )


@mfa_group.command("rm")
@click.argument("name")
@click.option("--otp", default=None, help="A TOTP code to confirm with your TOTP device.")
@handle_errors
def rm_command(name: str, otp: str | None) -> None:
    """Remove the MFA device NAME (not your last one when the cluster requires a second factor).

    \b
    Example:
      bsh mfa rm yubikey
    """
    profile = ProfileStore().load()

    async def go() -> None:
        async with _profile_client(profile) as client:
            devices = [d.model_dump() for d in (await client.send(LIST_DEVICES)).devices]
            if not any(d["name"] == name for d in devices):
                raise NotFound(f"no MFA device named {name!r}; bsh mfa ls lists yours")
            others = [d for d in devices if d["name"] != name] or devices
            proof = await _proof(client, profile, others, f"mfa:remove:{name}", otp)
            await client.send(
                REMOVE_DEVICE, Remove.model_validate({"proof": proof}), path={"name": name}
            )

    run_async(go())
    click.echo(f"MFA device {name!r} removed.")
