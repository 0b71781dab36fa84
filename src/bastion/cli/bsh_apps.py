"""``bsh apps ls|login|config|logout``: internal web apps through the proxy.

Layer: client edge. ``bsh apps ls [k=v ...]`` lists the apps your roles allow (RBAC on the
server, ``GET /v1/apps``) with their addresses (``NAME.<proxy>``). ``bsh apps login NAME`` asks
auth for a certificate routed to that app (``POST /v1/apps/certs``) and keeps it with a fresh
key under the profile (``apps/NAME.crt``, ``apps/NAME.key``, ``apps/NAME.ca``: the CA that
verifies the proxy), so ``curl --cert ... --key ... --cacert ... https://NAME.<proxy>/`` works.
``bsh apps config NAME`` prints those curl flags; ``bsh apps logout [NAME]`` removes the files.
docs/app-access.md.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.render import print_json, print_table
from bastion.client.api import AuthClient
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import check_profile
from bastion.client.tls import profile_context
from bastion.contract.apps import APP_CERT, LIST_APPS, AppCertRequest, AppInfo, AppsQuery
from bastion.errors import BadParameter, NotFound
from bastion.files import write_private_file
from bastion.protocols.alpn import ALPN_HTTP

__all__ = ["apps_group", "curl_flags"]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _profile() -> Profile:
    profile = ProfileStore().load(None)
    check_profile(profile)
    return profile


def _files(profile: Profile, name: str) -> Path:
    if not _NAME.match(name):
        raise BadParameter(f"invalid app name {name!r}")
    return profile.path / "apps" / name


def curl_flags(files: Path, addr: str) -> str:
    """The curl command line for an app certificate at ``files`` (``.crt/.key/.ca``)."""
    return " ".join(
        [
            "curl",
            "--cert",
            shlex.quote(f"{files}.crt"),
            "--key",
            shlex.quote(f"{files}.key"),
            "--cacert",
            shlex.quote(f"{files}.ca"),
            shlex.quote(f"https://{addr}/"),
        ]
    )


@click.group("apps")
def apps_group() -> None:
    """Internal web apps through the proxy.

    \b
    Examples:
      bsh apps ls env=dev
      bsh apps login grafana
      bsh apps config grafana
      bsh apps logout
    """


@apps_group.command("ls")
@click.argument("labels", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def ls_command(labels: tuple[str, ...], fmt: str) -> None:
    """List the apps your roles allow, filtered by labels (k=v)."""
    for item in labels:
        if "=" not in item:
            raise BadParameter(f"invalid label filter {item!r}: expected key=value")
    profile = _profile()
    query = AppsQuery(labels=",".join(labels))

    async def go() -> list[AppInfo]:
        ctx = profile_context(profile.path, profile.name, [ALPN_HTTP])
        async with AuthClient(profile.proxy, ctx) as client:
            return (await client.send(LIST_APPS, query=query)).apps

    items = run_async(go())
    if fmt == "json":
        print_json([i.model_dump() for i in items])
        return
    rows = [
        [
            a.name,
            f"https://{a.public_addr}/",
            ",".join(f"{k}={v}" for k, v in sorted(a.labels.items())),
        ]
        for a in items
    ]
    print_table(("NAME", "ADDRESS", "LABELS"), rows, empty="No apps found.")


@apps_group.command("login")
@click.argument("name")
@click.option("--ttl", default="12h", show_default=True, help="Capped by your login.")
@handle_errors
def login_command(name: str, ttl: str) -> None:
    """Get a certificate for app NAME (for curl and other mTLS clients)."""
    profile = _profile()
    files = _files(profile, name)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = AppCertRequest.model_validate({"app": name, "public_key": pub.decode(), "ttl": ttl})

    async def go() -> tuple[str, str, str, str]:
        ctx = profile_context(profile.path, profile.name, [ALPN_HTTP])
        async with AuthClient(profile.proxy, ctx) as client:
            reply = await client.send(APP_CERT, body)
        return reply.cert, reply.ca, reply.expires, reply.public_addr

    cert, ca, expires, addr = run_async(go())
    write_private_file(Path(f"{files}.key"), key_pem)
    write_private_file(Path(f"{files}.crt"), cert)
    write_private_file(Path(f"{files}.ca"), ca)
    write_private_file(Path(f"{files}.json"), json.dumps({"public_addr": addr}))
    click.echo(f"app {name}: certificate valid until {expires}\n  {curl_flags(files, addr)}")


@apps_group.command("config")
@click.argument("name")
@handle_errors
def config_command(name: str) -> None:
    """Print the curl command line for app NAME (after bsh apps login NAME)."""
    files = _files(_profile(), name)
    meta = Path(f"{files}.json")
    if not meta.is_file():
        raise NotFound(f"no certificate for app {name}: run bsh apps login {name}")
    click.echo(curl_flags(files, json.loads(meta.read_text())["public_addr"]))


@apps_group.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout_command(name: str | None) -> None:
    """Remove the app certificates (of NAME, or all)."""
    profile = _profile()
    folder = profile.path / "apps"
    names = [name] if name else sorted({p.stem for p in folder.glob("*.crt")})
    for each in names:
        files = _files(profile, each)
        for ext in (".crt", ".key", ".ca", ".json"):
            Path(f"{files}{ext}").unlink(missing_ok=True)
    click.echo(f"logged out of {len(names)} app(s)")
