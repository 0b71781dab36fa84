"""``bsh apps ls|login|config|logout``: internal web apps through the proxy.

Layer: client edge. ``bsh apps ls [k=v ...]`` lists the apps your roles allow (RBAC on the
server, ``GET /v1/apps``) with their addresses (``NAME.<proxy>``). ``bsh apps login NAME`` asks
auth for a certificate routed to that app (``POST /v1/apps/certs``; when the app takes
per-session MFA, an MFA-scoped one-minute certificate after a security-key touch or a TOTP
code: ``POST /v1/apps/mfa/challenge`` then ``/v1/apps/mfa/certs``) and keeps it with a fresh
key under the profile (``apps/NAME.crt``, ``apps/NAME.key``, ``apps/NAME.ca``: the CA that
verifies the proxy), so ``curl --cert ... --key ... --cacert ... https://NAME.<proxy>/`` works.
``bsh apps config NAME`` prints those curl flags; ``bsh apps logout [NAME]`` removes the files.
``bsh proxy app NAME --port P`` listens on 127.0.0.1:P and carries each local connection to
the proxy over TLS with that certificate: for a TCP app with ALPN ``bastion-app/1`` (bytes as
they come); for an HTTP app as plain HTTP (for tools that cannot do mTLS: ``curl
http://127.0.0.1:P/``) with SNI ``NAME.<proxy>`` and ALPN ``http/1.1``, each request head
parsed strictly (:mod:`bastion.protocols.http1`) and its ``Host`` set to the app's address,
bodies copied as they come (Content-Length or chunked), a WebSocket upgrade relayed as bytes.
In a ``bsh login --key-store=tpm`` profile the app certificate is for the TPM-held key (no
``apps/NAME.key``): ``bsh proxy app`` presents it (the TPM signs each handshake), and ``bsh
apps config`` says in one line that curl cannot. docs/app-access.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import ssl
import sys
from pathlib import Path
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.profile_api import check_label_filters, current_profile, profile_send
from bastion.cli.render import print_json, print_table
from bastion.client.mfa import origin_for, solve
from bastion.client.profile import Profile, resource_key
from bastion.client.proxy_conn import split_host_port
from bastion.client.tls import profile_key_is_tpm, resource_context
from bastion.contract.apps import (
    APP_CERT,
    APP_MFA_CERT,
    APP_MFA_CHALLENGE,
    LIST_APPS,
    AppCert,
    AppCertRequest,
    AppMfaCertRequest,
    AppMfaTarget,
    AppsQuery,
)
from bastion.errors import BadParameter, NotFound, RemoteProtocolError
from bastion.files import write_private_file
from bastion.protocols.alpn import ALPN_APP, ALPN_HTTP
from bastion.protocols.http1 import (
    BadMessage,
    ChunkedScanner,
    RequestHead,
    find_head_end,
    parse_request_head,
)
from bastion.runtime import run as run_loop
from bastion.runtime import tune_runtime

__all__ = ["apps_group", "curl_flags", "proxy_app", "rewrite_head", "run_proxy_app"]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


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
    """List the apps your roles allow, filtered by labels (k=v).

    \b
    Examples:
      bsh apps ls
      bsh apps ls env=dev --format json
    """
    check_label_filters(labels)
    query = AppsQuery(labels=",".join(labels))
    items = profile_send(current_profile(), LIST_APPS, query=query).apps
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
@click.option(
    "--otp",
    "use_otp",
    is_flag=True,
    help="Answer per-session MFA with a TOTP code instead of a security key.",
)
@handle_errors
def login_command(name: str, ttl: str, use_otp: bool) -> None:
    """Get a certificate for app NAME (for curl and other mTLS clients).

    When your roles require per-session MFA for the app, you are asked for your security key
    (or a TOTP code) and the certificate is MFA-scoped: it lives one minute.

    \b
    Examples:
      bsh apps login grafana
      bsh apps login redis --ttl 1h
      bsh apps login admin --otp
    """
    profile = current_profile()
    files = _files(profile, name)
    tpm = profile_key_is_tpm(profile.path)  # --key-store=tpm: for the TPM-held key, no key file
    key_pem, pub = resource_key(profile.path)
    body = AppCertRequest.model_validate({"app": name, "public_key": pub.decode(), "ttl": ttl})

    reply = _mfa_cert(profile, name, pub.decode(), use_otp)
    if reply is None:
        reply = profile_send(profile, APP_CERT, body)
    cert, ca, expires, addr = reply.cert, reply.ca, reply.expires, reply.public_addr
    if key_pem:
        write_private_file(Path(f"{files}.key"), key_pem)
    else:
        Path(f"{files}.key").unlink(missing_ok=True)
    write_private_file(Path(f"{files}.crt"), cert)
    write_private_file(Path(f"{files}.ca"), ca)
    write_private_file(Path(f"{files}.json"), json.dumps({"public_addr": addr}))
    if tpm:
        click.echo(f"app {name}: certificate valid until {expires}, for your TPM-held key")
        click.echo(f"  {_tpm_hint(name)}")
        return
    click.echo(f"app {name}: certificate valid until {expires}\n  {curl_flags(files, addr)}")


def _tpm_hint(name: str) -> str:
    return (
        f"curl and other mTLS clients cannot use a TPM-held key: run bsh proxy app {name} "
        "--port 8080, then use http://127.0.0.1:8080/ (or the port for a TCP app)"
    )


def _mfa_cert(profile: Profile, name: str, public_key: str, use_otp: bool) -> AppCert | None:
    """An MFA-scoped certificate when the app takes per-session MFA (the security key, or a
    TOTP code, is asked for); None when it does not."""
    answer = profile_send(profile, APP_MFA_CHALLENGE, AppMfaTarget(app=name))
    if not answer.mfa_required:
        return None
    response: dict[str, Any] | None = None
    otp = ""
    if answer.challenge is not None and not (use_otp and answer.totp):
        click.echo(f"per-session MFA for app {name}: touch your security key", err=True)
        origin = origin_for(profile.proxy)
        response = solve(answer.challenge, origin, profile_dir=profile.path)
    elif answer.totp:
        otp = click.prompt(
            f"per-session MFA for app {name}: enter the 6-digit code from your authenticator app",
            err=True,
        ).strip()
    else:
        raise RemoteProtocolError("the server asked for MFA but offered no way to answer")
    request = AppMfaCertRequest(app=name, public_key=public_key, mfa_response=response, otp=otp)
    return profile_send(profile, APP_MFA_CERT, request)


@apps_group.command("config")
@click.argument("name")
@handle_errors
def config_command(name: str) -> None:
    """Print the curl command line for app NAME (after bsh apps login NAME).

    \b
    Examples:
      bsh apps config grafana
      eval "$(bsh apps config grafana)"
    """
    profile = current_profile()
    files = _files(profile, name)
    meta = Path(f"{files}.json")
    if not meta.is_file():
        raise NotFound(f"no certificate for app {name}: run bsh apps login {name}")
    if not Path(f"{files}.key").exists() and profile_key_is_tpm(profile.path):
        raise BadParameter(_tpm_hint(name))
    click.echo(curl_flags(files, json.loads(meta.read_text())["public_addr"]))


@apps_group.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout_command(name: str | None) -> None:
    """Remove the app certificates (of NAME, or all).

    \b
    Examples:
      bsh apps logout grafana
      bsh apps logout
    """
    profile = current_profile()
    folder = profile.path / "apps"
    names = [name] if name else sorted({p.stem for p in folder.glob("*.crt")})
    for each in names:
        files = _files(profile, each)
        for ext in (".crt", ".key", ".ca", ".json"):
            Path(f"{files}{ext}").unlink(missing_ok=True)
    click.echo(f"logged out of {len(names)} app(s)")


def app_context(profile: Profile, name: str, alpn: str = ALPN_APP) -> ssl.SSLContext:
    """TLS to the proxy with the app certificate of ``name`` (ALPN bastion-app/1, or
    http/1.1 for an HTTP app)."""
    files = _files(profile, name)
    if not Path(f"{files}.crt").is_file():
        raise NotFound(f"no certificate for app {name}: run bsh apps login {name}")
    return resource_context(
        profile.path,
        Path(f"{files}.ca").read_text(),
        Path(f"{files}.crt").read_text(),
        Path(f"{files}.key"),
        [alpn],
    )


def _public_addr(profile: Profile, name: str) -> str:
    meta = Path(f"{_files(profile, name)}.json")
    if not meta.is_file():
        raise NotFound(f"no certificate for app {name}: run bsh apps login {name}")
    return str(json.loads(meta.read_text())["public_addr"])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    finally:
        if not writer.can_write_eof():
            writer.close()


async def _serve_local(
    proxy: str, ctx: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        host, port = split_host_port(proxy)
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), 15
            )
        except (OSError, TimeoutError, BadParameter) as exc:
            sys.stderr.write(f"bsh proxy app: cannot reach the proxy: {exc}\n")
            return
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer), return_exceptions=True)
        up_w.close()
    finally:
        writer.close()


def rewrite_head(head: RequestHead, host: bytes) -> bytes:
    """The request head as sent to the proxy: the same, with ``Host: host``."""
    out = bytearray(f"{head.method} {head.target} {head.version}\r\n".encode("latin-1"))
    out += b"Host: " + host + b"\r\n"
    for low, raw, value in head.headers:
        if low != b"host":
            out += raw + b": " + value + b"\r\n"
    return bytes(out + b"\r\n")


async def _forward_requests(
    reader: asyncio.StreamReader, up: asyncio.StreamWriter, host: bytes
) -> None:
    """Client to proxy: each request head with its ``Host`` set, its body as it comes; after
    an ``Upgrade`` request, bytes as they come."""
    buf = bytearray()
    while True:
        end = find_head_end(buf)
        while end < 0:
            chunk = await reader.read(65536)
            if not chunk:
                if up.can_write_eof():
                    up.write_eof()
                return
            buf += chunk
            end = find_head_end(buf)
        head = parse_request_head(bytes(buf[:end]))
        del buf[:end]
        up.write(rewrite_head(head, host))
        if b"upgrade" in head.connection_tokens:
            up.write(bytes(buf))
            await _pipe(reader, up)
            return
        scanner = ChunkedScanner() if head.chunked else None
        remaining = head.content_length or 0
        while (scanner is not None and not scanner.done) or (scanner is None and remaining):
            if not buf:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionResetError("the client closed in the middle of a body")
                buf += chunk
            n = scanner.feed(buf) if scanner is not None else min(remaining, len(buf))
            remaining -= n if scanner is None else 0
            up.write(bytes(buf[:n]))
            del buf[:n]
            await up.drain()
        await up.drain()


async def _serve_http(
    proxy: str,
    ctx: ssl.SSLContext,
    addr: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One local plain-HTTP connection, carried to ``https://addr`` with the certificate."""
    try:
        host, port = split_host_port(proxy)
        sni = split_host_port(addr, port)[0]
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=sni), 15
            )
        except (OSError, TimeoutError, BadParameter) as exc:
            sys.stderr.write(f"bsh proxy app: cannot reach the proxy: {exc}\n")
            body = b"bsh proxy app: cannot reach the proxy\n"
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close"
                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        try:
            await asyncio.gather(
                _forward_requests(reader, up_w, addr.encode("idna")), _pipe(up_r, writer)
            )
        except BadMessage as exc:
            sys.stderr.write(f"bsh proxy app: bad request from a local client: {exc.message}\n")
        except (ConnectionError, OSError):
            pass
        finally:
            up_w.close()
    finally:
        writer.close()


async def run_proxy_app(
    proxy: str,
    ctx: ssl.SSLContext,
    name: str,
    host: str,
    port: int,
    ready: bool = True,
    http_addr: str = "",
) -> None:
    """Serve the local listener of app ``name`` until cancelled: a TCP app's bytes, or
    (``http_addr``: the app's public address) plain HTTP for an HTTP app."""
    if http_addr:
        server = await asyncio.start_server(
            lambda r, w: _serve_http(proxy, ctx, http_addr, r, w), host, port
        )
    else:
        server = await asyncio.start_server(lambda r, w: _serve_local(proxy, ctx, r, w), host, port)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        sys.stderr.write(f"bsh proxy app {name}: listening on {host}:{bound}\n")
        sys.stderr.flush()
    async with server:
        await server.serve_forever()


def proxy_app(name: str, port: int, host: str) -> None:
    """The ``bsh proxy app`` command body."""
    profile = current_profile()
    listed = profile_send(profile, LIST_APPS, query=AppsQuery()).apps
    found = next((a for a in listed if a.name == name), None)
    if found is None:
        raise NotFound(f'app "{name}" not found (bsh apps ls lists the apps you may open)')
    if found.protocol == "tcp":
        ctx, addr = app_context(profile, name), ""
    else:
        ctx, addr = app_context(profile, name, ALPN_HTTP), _public_addr(profile, name)
    try:
        tune_runtime()  # a long-lived relay: the daemon's malloc and GC tuning
        run_loop(run_proxy_app(profile.proxy, ctx, name, host, port, http_addr=addr))
    except KeyboardInterrupt:
        pass
