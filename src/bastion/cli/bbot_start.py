"""``bbot start``: a bot joins once, then keeps its short-lived certificates renewed (issue 18).

Layer: client edge. The daemon joins with its single-use token (or an OIDC JWT from its CI
platform), then renews its certificate with a new key each time at 1/3 of the lifetime left
(with jitter; with capped exponential backoff while auth is unreachable). Each renewal
presents the previous certificate, whose generation auth checks: a copied identity that renews
after the original locks the bot. ``--oneshot`` joins (or renews) once and exits: CI jobs.

Output (``--dest DIR``; every file 0600, every directory 0700)::

    DIR/state/     the bot's own key and certificate (what renews); never hand it out
    DIR/identity/  a bsh home: BSH_HOME=DIR/identity bsh ls / bctl get ...
    DIR/ssh/       key, key-cert.pub, known_hosts (@cert-authority of the host CA), ssh_config:
                   ssh -F DIR/ssh/ssh_config LOGIN@NODE.CLUSTER
    DIR/x509/      tls.crt, tls.key, ca.pem (host CA), user_ca.pem: for mTLS clients
    DIR/db-NAME/   NAME.crt, NAME.key, NAME.ca and a pg_service.conf entry ``bastion-NAME`` (as
                   ``bsh db login`` writes): PGSERVICEFILE=DIR/db-NAME/pg_service.conf psql
                   "service=bastion-NAME"  (``databases:`` in bbot.yaml, ``--database``)
    DIR/app-NAME/  NAME.crt, NAME.key, NAME.ca, NAME.json (address and curl command line, as
                   ``bsh apps login`` writes): curl --cert ... https://NAME.PROXY/ (``apps:``)

Each output directory is a symlink swapped atomically to a fully written new directory, so a
reader never sees a key of one renewal next to a certificate of another.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion.errors import (
    AccessDenied,
    AuthenticationFailed,
    BadParameter,
    BastionError,
    ConnectionProblem,
)
from bastion.files import write_private_file
from bastion.types.duration import parse_duration

if TYPE_CHECKING:
    from bastion.contract.renew import BotJoin

__all__ = [
    "BotConfig",
    "DatabaseOutput",
    "Routed",
    "backoff_cap",
    "backoff_delay",
    "load_config",
    "renew_delay",
    "run_bot",
    "write_outputs",
    "write_routed",
]

log = structlog.get_logger("bbot")

OUTPUTS = ("identity", "ssh", "x509")
MAX_BACKOFF = 60.0
_ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def _route_name(value: str) -> str:
    if not _ROUTE_NAME.match(value):
        raise ValueError(f"invalid database or app name {value!r}")
    return value


class DatabaseOutput(BaseModel):
    """A ``databases:`` entry: a certificate routed to database ``name`` (``bsh db login``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    db_user: str = ""
    db_name: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _route_name(value)


class BotConfig(BaseModel):
    """``bbot.yaml`` (flags override it)."""

    model_config = ConfigDict(extra="forbid")

    proxy: str
    """``host:port`` of the proxy (or auth) API."""
    ca_pin: str = ""
    insecure: bool = False
    dest: Path
    token: str = ""
    join_method: str = "token"
    bot: str = ""
    """With join_method oidc or bound_keypair: the bot's name."""
    keypair_file: str = ""
    """With join_method bound_keypair: the bot's OpenSSH private key (its public key was given
    to ``bctl bots add --public-key``); it signs auth's challenge at each join."""
    id_token_file: str = ""
    """With join_method oidc: a file holding the JWT; empty: ask GitHub Actions for one
    (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN) with ``audience``."""
    audience: str = "bastion"
    ttl: timedelta = timedelta(hours=1)
    renew_at: float = 1 / 3
    """Renew when this fraction of the certificate's lifetime is left."""
    jitter: float = 0.1
    """Up to this fraction of the wait is randomly taken off (bots do not renew in step)."""
    oneshot: bool = False
    outputs: list[str] = Field(default_factory=lambda: list(OUTPUTS))
    databases: list[DatabaseOutput] = Field(default_factory=list)
    """``DIR/db-NAME`` outputs; ``NAME``, ``NAME:DB_USER`` or ``NAME:DB_USER:DB_NAME`` or a
    mapping ``{name, db_user, db_name}``."""
    apps: list[str] = Field(default_factory=list)
    """``DIR/app-NAME`` outputs: app certificates for curl and other mTLS clients."""

    @field_validator("databases", mode="before")
    @classmethod
    def _databases(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            return value
        out: list[object] = []
        for item in value:
            if isinstance(item, str):
                name, _, rest = item.partition(":")
                db_user, _, db_name = rest.partition(":")
                item = {"name": name, "db_user": db_user, "db_name": db_name}
            out.append(item)
        return out

    @field_validator("apps")
    @classmethod
    def _apps(cls, value: list[str]) -> list[str]:
        return [_route_name(v) for v in value]

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in OUTPUTS]
        if bad:
            raise ValueError(f"unknown outputs {bad}: use {', '.join(OUTPUTS)}")
        return value

    @field_validator("join_method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in ("token", "oidc", "bound_keypair"):
            raise ValueError("join_method: token, oidc or bound_keypair")
        return value


def load_config(path: str | None, flags: dict[str, Any]) -> BotConfig:
    """``bbot.yaml`` (when given) with the flags that were set on top.

    Raises:
        BadParameter: unreadable file or invalid settings (one line naming the field).
    """
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BadParameter(f"cannot read {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise BadParameter(f"{path}: expected a mapping of settings")
        data.update(loaded)
    data.update({k: v for k, v in flags.items() if v not in (None, "", False, ())})
    try:
        return BotConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadParameter(f"bbot config: {where}: {first['msg']}") from None
    except ValueError as exc:
        raise BadParameter(f"bbot config: {exc}") from None


# ---- pure scheduling -------------------------------------------------------------------------


def renew_delay(
    issued: datetime, expires: datetime, now: datetime, fraction: float, jitter: float, rand: float
) -> float:
    """Seconds until the next renewal: when ``fraction`` of the lifetime is left, minus up
    to ``jitter`` of the wait (``rand`` in [0, 1)); never negative."""
    lifetime = (expires - issued).total_seconds()
    at = expires - timedelta(seconds=lifetime * fraction)
    wait = (at - now).total_seconds()
    return max(0.0, wait * (1 - jitter * rand))


def backoff_cap(lifetime: timedelta) -> float:
    """The longest wait between two attempts: a tenth of the certificate's lifetime (a
    short-lived one is retried often enough to renew soon after auth is back), at most
    :data:`MAX_BACKOFF`, at least a second."""
    return min(MAX_BACKOFF, max(1.0, lifetime.total_seconds() / 10))


def backoff_delay(attempt: int, rand: float, cap: float = MAX_BACKOFF) -> float:
    """Capped exponential backoff with full jitter: 1, 2, 4... seconds (at most ``cap``)."""
    return min(cap, 2.0**attempt) * (0.5 + rand / 2)


# ---- outputs ---------------------------------------------------------------------------------


@dataclass
class Issued:
    """One join or renewal: the key and what auth returned."""

    key_pem: bytes
    key_ssh: bytes
    public_key: str
    certs: dict[str, Any]
    cluster: str
    proxy: str
    issued: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def expires(self) -> datetime:
        return datetime.fromisoformat(str(self.certs["expires"]))


def _swap(dest: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Write a new version of output ``name`` and point ``dest/name`` at it atomically."""
    versions = dest / ".versions"
    versions.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = versions / f"{name}.{time.time_ns()}"
    target.mkdir(mode=0o700)
    fill(target)
    link = dest / name
    if link.exists() and not link.is_symlink():
        raise BadParameter(f"{link} exists and is not bbot's output link; move it away")
    tmp = dest / f".{name}.link"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.relative_to(dest))
    os.replace(tmp, link)
    for old in sorted(versions.glob(f"{name}.*"))[:-3]:  # keep two previous ones for readers
        shutil.rmtree(old, ignore_errors=True)
    return target


def _bsh() -> str:
    here = Path(sys.argv[0]).absolute().parent / "bsh"
    if here.exists():
        return str(here)
    found = shutil.which("bsh")
    return str(Path(found).absolute()) if found else "bsh"


def write_outputs(dest: Path, got: Issued, outputs: list[str]) -> None:
    """Write ``state`` and the chosen outputs, each swapped in whole."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from bastion.cli.bsh_ssh import render_ssh_config
    from bastion.client.profile import Profile, ProfileStore

    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    certs = got.certs
    host_ca = list(certs.get("ssh_host_ca") or [])
    known = "".join(f"@cert-authority *.{got.cluster},{got.cluster} {k}\n" for k in host_ca)
    info = {
        "cluster": got.cluster,
        "proxy": got.proxy,
        "user": certs["user"],
        "expires": certs["expires"],
        "issued": got.issued.isoformat(),
        "generation": certs.get("generation", 0),
    }

    written: dict[str, Path] = {}

    def state(d: Path) -> None:
        write_private_file(d / "tls.key", got.key_pem)
        write_private_file(d / "tls.crt", certs["tls_cert"])
        write_private_file(d / "ca.pem", certs["tls_host_ca"])
        write_private_file(d / "state.json", json.dumps(info, indent=2))

    def identity(d: Path) -> None:
        key = load_pem_private_key(got.key_pem, None)
        profile = Profile(
            name=got.cluster,
            proxy=got.proxy,
            user=certs["user"],
            cluster=got.cluster,
            expires=certs["expires"],
            roles=list(certs.get("roles", [])),
            logins=list(certs.get("logins", [])),
        )
        ProfileStore(d).save(profile, key, certs)  # type: ignore[arg-type]

    def ssh(d: Path) -> None:
        write_private_file(d / "key", got.key_ssh)
        write_private_file(d / "key.pub", got.public_key + "\n")
        if certs.get("ssh_cert"):
            write_private_file(d / "key-cert.pub", certs["ssh_cert"] + "\n")
        write_private_file(d / "known_hosts", known)
        # The config names the files of its own version (and the identity home written just
        # before it): ssh never pairs a key with the certificate of another renewal.
        home = written.get("identity", dest / "identity")
        config = render_ssh_config(got.cluster, d, _bsh(), str(home))
        config = config.replace("(generated by bsh config)", "(generated by bbot start)")
        write_private_file(d / "ssh_config", config + "    BatchMode yes\n")

    def tls(d: Path) -> None:
        write_private_file(d / "tls.key", got.key_pem)
        write_private_file(d / "tls.crt", certs["tls_cert"])
        write_private_file(d / "ca.pem", certs["tls_host_ca"])
        write_private_file(d / "user_ca.pem", certs.get("tls_user_ca", ""))

    writers = {"identity": identity, "ssh": ssh, "x509": tls}
    chosen = set(outputs) | ({"identity"} if "ssh" in outputs else set())  # ProxyCommand's home
    for name in OUTPUTS:
        if name in chosen:
            written[name] = _swap(dest, name, writers[name])
    _swap(dest, "state", state)


@dataclass
class Routed:
    """A certificate routed to one database or app (for ``DIR/db-NAME`` or ``DIR/app-NAME``)."""

    kind: str
    """``db`` or ``app``."""
    name: str
    key_pem: bytes
    cert: str
    ca: str
    expires: str
    public_addr: str = ""
    db_user: str = ""
    db_name: str = ""

    @property
    def output(self) -> str:
        return f"{self.kind}-{self.name}"


def write_routed(dest: Path, proxy: str, routed: list[Routed]) -> None:
    """Write each database or app output, swapped in whole like the others: the same files
    (and ``pg_service.conf`` entry, curl command line) ``bsh db login``/``bsh apps login``
    write, pointing at the files of their own version."""
    from bastion.cli.bsh_apps import curl_flags
    from bastion.cli.bsh_db import service_entry
    from bastion.client.proxy_conn import split_host_port

    host, port = split_host_port(proxy)
    for item in routed:

        def fill(d: Path, r: Routed = item) -> None:
            files = d / r.name
            write_private_file(Path(f"{files}.key"), r.key_pem)
            write_private_file(Path(f"{files}.crt"), r.cert)
            write_private_file(Path(f"{files}.ca"), r.ca)
            if r.kind == "db":
                entry = service_entry(r.name, host, port, r.db_user, r.db_name, files)
                write_private_file(d / "pg_service.conf", entry)
            else:
                meta = {"public_addr": r.public_addr, "expires": r.expires,
                        "curl": curl_flags(files, r.public_addr)}  # fmt: skip
                write_private_file(Path(f"{files}.json"), json.dumps(meta, indent=2))

        _swap(dest, item.output, fill)


def load_state(dest: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((dest / "state" / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


# ---- talking to auth -------------------------------------------------------------------------


def _new_key() -> tuple[bytes, bytes, str]:
    from cryptography.hazmat.primitives import serialization

    from bastion.client.profile import new_client_key

    key = new_client_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ssh = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, ssh, pub.decode()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise BadParameter(f"cannot read {path}: {exc.strerror}") from None


async def _id_token(cfg: BotConfig) -> str:
    if cfg.id_token_file:
        return _read(Path(cfg.id_token_file)).strip()
    url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not url or not bearer:
        raise BadParameter(
            "join_method oidc: pass --id-token-file, or run in GitHub Actions with "
            "permissions: id-token: write"
        )
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            url,
            params={"audience": cfg.audience},
            headers={"Authorization": f"Bearer {bearer}"},
        ) as resp,
    ):
        if resp.status != 200:
            raise ConnectionProblem(f"GitHub Actions refused an ID token: HTTP {resp.status}")
        value = (await resp.json()).get("value")
    if not isinstance(value, str):
        raise ConnectionProblem("GitHub Actions answered no ID token")
    return value


def sign_bound_keypair(private_key_pem: bytes, message: bytes) -> str:
    """Base64 signature of ``message`` with an OpenSSH (or PEM) private key: Ed25519, ECDSA
    (SHA-256) or RSA (PKCS#1 v1.5, SHA-256). Raises BadParameter for another kind of key."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in private_key_pem:
            key = serialization.load_ssh_private_key(private_key_pem, None)
        else:
            key = serialization.load_pem_private_key(private_key_pem, None)
    except (ValueError, TypeError) as exc:
        raise BadParameter(f"--keypair: cannot load the private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, PKCS1v15(), hashes.SHA256())
    else:
        raise BadParameter("--keypair: use an ed25519, ECDSA or RSA key")
    return base64.b64encode(signature).decode()


async def _bound_keypair_join(cfg: BotConfig, host_ca: str, pub: str) -> BotJoin:
    """Ask auth for a challenge and sign it (with the new public key) with the bound key."""
    from bastion.client.api import AuthClient
    from bastion.client.tls import verified_context
    from bastion.contract.renew import (
        BOT_JOIN_CHALLENGE,
        BotJoin,
        ChallengeRequest,
        bound_keypair_message,
    )

    if not cfg.bot or not cfg.keypair_file:
        raise BadParameter("join_method bound_keypair: pass --bot and --keypair=PRIVATE_KEY")
    try:
        private = await asyncio.to_thread(Path(cfg.keypair_file).read_bytes)
    except OSError as exc:
        raise BadParameter(f"cannot read {cfg.keypair_file}: {exc.strerror}") from None
    async with AuthClient(cfg.proxy, verified_context(host_ca)) as client:
        got = await client.send(BOT_JOIN_CHALLENGE, ChallengeRequest(bot=cfg.bot))
    signature = sign_bound_keypair(private, bound_keypair_message(got.challenge, pub))
    return BotJoin(
        bot=cfg.bot, challenge=got.challenge, signature=signature, public_key=pub, ttl=cfg.ttl
    )


def _ec_key() -> tuple[bytes, str]:
    """A P-256 key (PKCS#8 PEM) and its public key (SPKI PEM), as bsh db/apps login make."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, pub.decode()


async def fetch_routed(cfg: BotConfig, got: Issued) -> list[Routed]:
    """With the bot's new certificate, the database and app certificates of the config (the
    same requests as ``bsh db login`` and ``bsh apps login``; each capped by the bot's)."""
    if not cfg.databases and not cfg.apps:
        return []
    from bastion.client.api import AuthClient
    from bastion.client.tls import pem_context
    from bastion.contract.apps import APP_CERT, AppCertRequest
    from bastion.contract.db import DB_USER_CERT, DbUserCertRequest
    from bastion.protocols.alpn import ALPN_HTTP

    certs = got.certs
    ctx = pem_context(
        certs["tls_host_ca"], certs["tls_cert"], got.key_pem.decode(), alpn=[ALPN_HTTP]
    )
    out: list[Routed] = []
    async with AuthClient(got.proxy, ctx) as client:
        for db in cfg.databases:
            pem, pub = _ec_key()
            body = DbUserCertRequest.model_validate(
                {"db_service": db.name, "db_user": db.db_user, "db_name": db.db_name,
                 "public_key": pub, "ttl": cfg.ttl}
            )  # fmt: skip
            dbc = await client.send(DB_USER_CERT, body)
            out.append(Routed("db", db.name, pem, dbc.cert, dbc.ca, dbc.expires,
                              db_user=db.db_user, db_name=db.db_name))  # fmt: skip
        for app in cfg.apps:
            pem, pub = _ec_key()
            request = AppCertRequest.model_validate({"app": app, "public_key": pub, "ttl": cfg.ttl})
            appc = await client.send(APP_CERT, request)
            out.append(Routed("app", app, pem, appc.cert, appc.ca, appc.expires,
                              public_addr=appc.public_addr))  # fmt: skip
    return out


async def join(cfg: BotConfig) -> Issued:
    """Verify the cluster by its pin, then join with the token or the OIDC JWT."""
    from bastion.client.api import AuthClient, fetch_cluster_ca
    from bastion.client.tls import verified_context
    from bastion.contract.renew import BOT_JOIN, BotJoin

    ping = await fetch_cluster_ca(cfg.proxy, cfg.ca_pin or None, cfg.insecure)
    pem, ssh, pub = _new_key()
    if cfg.join_method == "oidc":
        body = BotJoin(bot=cfg.bot, id_token=await _id_token(cfg), public_key=pub, ttl=cfg.ttl)
    elif cfg.join_method == "bound_keypair":
        body = await _bound_keypair_join(cfg, ping["tls_host_ca"], pub)
    else:
        if not cfg.token:
            raise BadParameter("pass --token (bctl bots add printed it) or --join-method=oidc")
        body = BotJoin(token=cfg.token, public_key=pub, ttl=cfg.ttl)
    async with AuthClient(cfg.proxy, verified_context(ping["tls_host_ca"])) as client:
        reply = await client.send(BOT_JOIN, body)
    return Issued(pem, ssh, pub, reply.model_dump(), ping["cluster"], cfg.proxy)


async def renew(cfg: BotConfig) -> Issued:
    """Renew with the certificate in ``DEST/state`` for a new key."""
    from bastion.client.api import AuthClient
    from bastion.client.tls import verified_context
    from bastion.contract.renew import RENEW, Renew

    state_dir = cfg.dest / "state"
    info = load_state(cfg.dest)
    if info is None:
        raise BadParameter(f"no bot state in {state_dir}")
    ctx = verified_context(
        (state_dir / "ca.pem").read_text(), state_dir / "tls.crt", state_dir / "tls.key"
    )
    pem, ssh, pub = _new_key()
    async with AuthClient(str(info["proxy"]), ctx) as client:
        reply = await client.send(RENEW, Renew(public_key=pub, ttl=cfg.ttl))
    return Issued(pem, ssh, pub, reply.model_dump(), str(info["cluster"]), str(info["proxy"]))


def _still_valid(dest: Path) -> bool:
    info = load_state(dest)
    if info is None:
        return False
    return datetime.fromisoformat(str(info["expires"])) > datetime.now(UTC) + timedelta(seconds=5)


async def first_identity(cfg: BotConfig) -> Issued:
    """Renew a still-valid state (a restart), else join."""
    if _still_valid(cfg.dest):
        return await renew(cfg)
    return await join(cfg)


async def run_bot(cfg: BotConfig, on_issued: Callable[[Issued], None] | None = None) -> None:
    """Join (or renew a saved identity), write the outputs; unless ``oneshot``, renew forever.

    Raises:
        AccessDenied, AuthenticationFailed: refused for good (locked, removed, token spent).
    """
    got = await first_identity(cfg)
    write_outputs(cfg.dest, got, cfg.outputs)
    write_routed(cfg.dest, got.proxy, await fetch_routed(cfg, got))  # a bad name: one line
    _report(got, on_issued)
    while not cfg.oneshot:
        now = datetime.now(UTC)
        delay = renew_delay(got.issued, got.expires, now, cfg.renew_at, cfg.jitter, random.random())
        await asyncio.sleep(delay)
        attempt = 0
        cap = backoff_cap(got.expires - got.issued)
        while True:
            try:
                got = await renew(cfg)
                break
            except (AccessDenied, AuthenticationFailed):
                raise
            except (ConnectionProblem, OSError) as exc:
                wait = backoff_delay(attempt, random.random(), cap)
                if got.expires <= datetime.now(UTC):
                    log.error("certificate expired while auth was unreachable", error=str(exc))
                else:
                    log.warning("renewal failed; retrying", error=str(exc), retry_in=round(wait, 1))
                attempt += 1
                await asyncio.sleep(wait)
            except BastionError as exc:
                log.warning("renewal refused; retrying", error=exc.message)
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, random.random(), cap))
        write_outputs(cfg.dest, got, cfg.outputs)  # first: the renewal advanced the generation
        await _refresh_routed(cfg, got)
        _report(got, on_issued)


async def _refresh_routed(cfg: BotConfig, got: Issued) -> None:
    """The database and app outputs after a renewal; a failure keeps their last good version
    (the bot's own identity is already written) and is retried at the next renewal."""
    try:
        write_routed(cfg.dest, got.proxy, await fetch_routed(cfg, got))
    except (BastionError, OSError) as exc:
        log.error("cannot renew the database/app outputs; keeping the last ones", error=str(exc))


def _report(got: Issued, on_issued: Callable[[Issued], None] | None) -> None:
    log.info(
        "certificates written",
        user=got.certs["user"],
        expires=got.certs["expires"],
        generation=got.certs.get("generation", 0),
    )
    if on_issued is not None:
        on_issued(got)
