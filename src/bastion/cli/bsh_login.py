"""``bsh login``: password + TOTP, an invite, a passkey, or SSO in the browser.

Layer: client edge. The private key is generated here and never leaves the machine; the server is
verified against the cluster CA, which is itself checked against ``--ca-pin`` (or the CA saved by
an earlier login) before any secret is sent. Imported only when ``bsh login`` runs (see
:mod:`bastion.cli.bsh`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click
from cryptography.hazmat.primitives import serialization

from bastion.cli import bsh_device, bsh_mfa
from bastion.cli.bsh import print_profile
from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.client.api import AuthClient, fetch_cluster_ca, spki_pin_of_pem
from bastion.client.device.ceremony import LoginKeys, fresh_challenge, login_keys
from bastion.client.device.tpm_key import TPMKeyBlob, save_blob
from bastion.client.profile import Profile, ProfileStore, new_client_key
from bastion.client.sso import sso_login
from bastion.client.tls import verified_context
from bastion.contract.core import (
    INVITE_COMPLETE,
    INVITE_START,
    LOGIN,
    InviteComplete,
    InviteToken,
    Login,
)
from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter, BastionError
from bastion.services.credentials import check_password_strength

__all__ = ["INSECURE_WARNING", "Secrets", "check_user_flag", "login", "totp_enrollment"]

PASSWORD_TRIES = 3
OTP_TRIES = 3

INSECURE_WARNING = (
    "WARNING: --insecure: the server's identity is NOT verified. Anyone on the network path can "
    "impersonate the cluster and capture your password. Use --ca-pin outside development."
)


async def _complete(client: AuthClient, body: dict[str, Any]) -> dict[str, Any]:
    certs = await client.send(INVITE_COMPLETE, InviteComplete.model_validate(body))
    return certs.model_dump()


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

    def new_password(self) -> str:
        """A new password that meets the cluster's password policy, checked here before the
        TOTP code is asked for; a terminal asks again (:data:`PASSWORD_TRIES` times)."""
        for attempt in range(PASSWORD_TRIES):
            password = self.password(confirm=True)
            try:
                check_password_strength(password)
                return password
            except BadParameter as exc:
                if self.password_stdin or attempt == PASSWORD_TRIES - 1:
                    raise
                click.echo(f"error: {exc.message}; choose another", err=True)
        raise AssertionError("not reached")

    def retry_otp_code(self) -> str | None:
        """The next TOTP code after a wrong one: the terminal asks again, ``--password-stdin``
        reads the next line; None when there is no other source (``--otp``, end of input)."""
        if self.otp:
            return None
        if self.password_stdin:
            line = self._stdin.readline()
            return line.strip() or None
        return self.otp_code()

    def otp_code(self) -> str:
        if self.otp:
            return self.otp
        if self.password_stdin:
            return self._line("TOTP code (second line)").strip()
        self._need_tty("TOTP code")
        value: str = click.prompt("Enter the 6-digit code from your authenticator app", err=True)
        return value.strip()


def totp_enrollment(uri: str, secret: str, terminal: bool) -> str:
    """What a TOTP enrollment shows: a QR code of ``uri`` for a terminal (``segno``), then the
    URI and the secret to paste where scanning is not possible."""
    qr = ""
    if terminal:
        import io

        import segno

        buf = io.StringIO()
        segno.make(uri, error="m").terminal(out=buf, border=2, compact=True)
        qr = "Scan this QR code with your authenticator app:\n" + buf.getvalue()
    return f"{qr}Or add it by hand (paste the URI or the secret):\n  {uri}\n  secret: {secret}"


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
    keys: LoginKeys | None = None,
    refresh: Callable[[str], LoginKeys] | None = None,
) -> tuple[dict[str, Any], LoginKeys]:
    """The login; returns its certificates and the key material it sent: ``keys`` (the device
    proof over the ping's challenge, and the TPM-held key certified over it), or for an
    invite, whose prompts may outlast that challenge, ``refresh`` over a fresh one."""
    profile_dir = profile_dir or Path(".")
    sent = keys or LoginKeys()

    async def run() -> dict[str, Any]:
        nonlocal sent
        async with client:
            if auth == "passwordless":
                return await bsh_mfa.passwordless_login(
                    client, public_key, ttl, profile_dir, sent.fields()
                )
            if invite:
                info = (await client.send(INVITE_START, InviteToken(token=invite))).model_dump()
                use_key = mfa == "webauthn" or info.get("second_factor") == "webauthn"
                if use_key:
                    click.echo(f"Setting the password of {info['user']}.", err=True)
                    password = secrets.new_password()
                    registration = await bsh_mfa.invite_webauthn(client, invite, profile_dir)
                    if refresh is not None and sent.device is not None:  # after the prompts
                        sent = refresh(await fresh_challenge(client))
                    body = {
                        "token": invite,
                        "password": password,
                        "webauthn": registration,
                        "public_key": public_key,
                        "ttl": ttl,
                        **sent.fields(),
                    }
                    return await _complete(client, body)
                if info["otp_required"]:
                    click.echo(
                        totp_enrollment(
                            str(info["otp_uri"]), str(info["otp_secret"]), sys.stderr.isatty()
                        ),
                        err=True,
                    )
                    sys.stderr.flush()
                click.echo(f"Setting the password of {info['user']}.", err=True)
                password = secrets.new_password()
                otp = secrets.otp_code() if info["otp_required"] else ""
                if refresh is not None and sent.device is not None:  # after the prompts
                    sent = refresh(await fresh_challenge(client))
                body = {
                    "token": invite,
                    "password": password,
                    "otp": otp,
                    "public_key": public_key,
                    "ttl": ttl,
                    **sent.fields(),
                }
                for attempt in range(OTP_TRIES):
                    try:
                        return await _complete(client, body)
                    except AuthenticationFailed as exc:  # a wrong code: the invite still holds
                        if not info["otp_required"] or attempt == OTP_TRIES - 1:
                            raise
                        if not secrets.password_stdin and not secrets.otp:
                            click.echo(f"error: {exc.message}", err=True)
                        again = secrets.retry_otp_code()
                        if again is None:
                            raise
                        body["otp"] = again
                raise AssertionError("not reached")
            assert user is not None
            password = secrets.password(confirm=False)
            body = {"user": user, "password": password, "public_key": public_key, "ttl": ttl}
            body.update(sent.fields())  # this machine's proof travels with the login request
            if second_factor == "off" and not secrets.otp:
                return (await client.send(LOGIN, Login.model_validate(body))).model_dump()
            return await bsh_mfa.login_second_factor(
                client, body, mfa, secrets.otp_code, profile_dir
            )

    certs = run_async(run())
    return certs, sent


def _keys_for(
    store: ProfileStore, profile_dir: Path, cluster: str, key_store: str
) -> Callable[[str, TPMKeyBlob | None], LoginKeys]:
    """The login's key material over a device challenge
    (:func:`~bastion.client.device.ceremony.login_keys`; a blob: certify that TPM key again):
    with ``--key-store=tpm`` its failure ends the login; with a software key the login goes
    on without the proof (the ceremony after the login then says why)."""

    def keys(challenge: str, blob: TPMKeyBlob | None) -> LoginKeys:
        if key_store == "tpm":
            return login_keys(store.home, profile_dir, cluster, challenge, key_store, blob)
        try:
            return login_keys(store.home, profile_dir, cluster, challenge, key_store)
        except BastionError as exc:
            click.echo(f"warning: device authentication failed: {exc.message}", err=True)
            return LoginKeys()

    return keys


def _sso_flow(
    client: AuthClient,
    proxy: str,
    connector: str,
    public_key: str,
    ttl: str,
    headless: bool,
    binding: dict[str, object] | None = None,
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
                binding=binding,
            )

    return run_async(run())


def _remembered_key_store(store: ProfileStore, cluster: str) -> str:
    """The ``--key-store`` an earlier login to ``cluster`` chose (``software`` when none)."""
    try:
        return store.load(cluster).key_store or "software"
    except (BastionError, OSError, ValueError, TypeError):
        return "software"


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


@click.command("login")
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
    "--request-id",
    default=None,
    help="Assume this approved access request with the current login (bsh request assume).",
)
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
    "--key-store",
    type=click.Choice(["software", "tpm"]),
    default=None,
    help="Where your SSH key lives: tpm keeps it in this machine's TPM (non-exportable; needs "
    "an enrolled device; the TLS key stays in software). Remembered in the profile "
    "(default: the profile's choice, else software).",
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
    request_id: str | None = None,
    key_store: str | None = None,
) -> None:
    """Log in (or accept an invite) and save short-lived certificates in a profile.

    \b
    Examples:
      bsh login --proxy=bastion.example.com:3080 --user=alice
      bsh login --proxy=bastion.example.com:3080 --invite=TOKEN --ca-pin=sha256:...
      bsh login --proxy=bastion.example.com:3080 --auth=okta --headless
      bsh login --proxy=bastion.example.com:3080 --user=alice --key-store=tpm
    """
    if request_id:  # re-issue from the current login: no password, no second factor
        from bastion.cli.bsh_request import assume_request

        assume_request(request_id, ttl)
        return
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
    if key_store is None:  # the profile's choice
        key_store = _remembered_key_store(store, str(ping["cluster"]))
    keys_for = _keys_for(store, profile_dir, str(ping["cluster"]), key_store)
    # The device proof over the ping's challenge for every kind of login; with --key-store=tpm
    # the AK certifies the TPM-held key over the same challenge.
    keys = keys_for(str(ping.get("device_challenge") or ""), None)
    if keys.ssh_public_key:
        public_key = keys.ssh_public_key  # one TPM-held key for both certificates: no tls.key
    if sso:  # the proof goes with the request; auth checks it when the IdP answers
        client = AuthClient(proxy, ctx)
        certs = _sso_flow(client, proxy, str(auth_name), public_key, ttl, headless, keys.fields())
    else:
        secrets = Secrets(password_stdin, otp, sys.stdin)
        certs, keys = _login_flow(
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
            keys=keys,
            refresh=lambda challenge: keys_for(challenge, keys.blob),
        )
    proof, tpm_blob, ssh_public = keys.device, keys.blob, keys.ssh_public_key
    cluster = str(certs.get("cluster") or ping["cluster"])
    profile = Profile(
        name=cluster,
        proxy=proxy,
        user=str(certs["user"]),
        cluster=cluster,
        expires=str(certs["expires"]),
        roles=list(certs.get("roles") or []),
        logins=list(certs.get("logins") or []),
        key_store=key_store,
    )
    if tpm_blob is not None:  # only the TPM's blob: no other TPM or program can use it
        save_blob(store.home / "profiles" / cluster, tpm_blob)
    store.save(profile, key, certs, ssh_public=ssh_public)
    try:
        challenge = str(certs.get("device_challenge") or "")  # one round trip (empty: two)
        sent = proof is not None and not certs.get("device_error")
        device_certs = None if sent else bsh_device.device_ceremony(store, profile, challenge)
    except BastionError as exc:  # the login stands; resources that require a device refuse
        click.echo(f"warning: device authentication failed: {exc.message}", err=True)
        device_certs = None
    if device_certs is not None:  # this machine is enrolled: certificates that carry it
        store.save(profile, key, device_certs, ssh_public=ssh_public)
    # Remember the CA for the next login to this address, unless nothing verified it; the
    # bundle came over the verified connection (it carries new CAs during a rotation).
    verified = bool(ca_pin) or not insecure
    pins = spki_pin_of_pem(str(certs["tls_host_ca"])) if verified else None
    store.remember_cluster(proxy, cluster, pins)
    print_profile(profile, current=True)
