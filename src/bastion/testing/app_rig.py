"""An in-process app-access rig: auth, the web pages and API, the proxy's one port with the app
route, and a real app (:mod:`bastion.testing.peers.app`) in its own process.

Layer: ``testing`` (used by ``tests/integration/test_app_access.py`` and ``bench/app.py``;
nothing in ``src`` imports it). The proxy listens on 127.0.0.1 (free port) with a certificate
for ``proxy.test``, ``*.proxy.test`` and 127.0.0.1 (the development wildcard the proxy issues
from its host CA); clients resolve ``*.proxy.test`` to 127.0.0.1 (``curl --resolve``,
Chromium ``--host-resolver-rules``). Apps: ``grafana`` (``env=dev``) and ``vault``
(``env=prod``) on the peer app. Role ``apps-dev`` allows ``app_labels: {env: dev}``; user
``alice`` (password :data:`PASSWORD`, no second factor) has it, ``bob`` has only ``plain`` (no app).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pyotp
from aiohttp import web

from bastion.api.app import build_app
from bastion.auth.apps import AppAccess
from bastion.auth.gate import Gate
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.clock import SystemClock
from bastion.live.registry import LiveRegistry
from bastion.locks.watcher import LockWatcher
from bastion.proxy.app_route import AppRoute, AppRouteDeps
from bastion.proxy.listener import ListenerConfig, ListenerDeps, ProxyListener, ProxyTLS
from bastion.services.credentials import hash_secret
from bastion.testing import new_tls_key
from bastion.testing.db_rig import Recorder, rig_auth
from bastion.testing.peers.ports import free_port
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec, WebAuthnPreference
from bastion.types.apps import App, AppHeader, AppRewrite, AppSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata
from bastion.web.apps import APP_ACCESS
from bastion.web.sessions import PREFIX as SESSION_PREFIX
from bastion.web.sessions import WebSessions

__all__ = ["DOMAIN", "PASSWORD", "AppRig", "start_app_rig"]

CLUSTER = "test.local"
DOMAIN = "proxy.test"
PASSWORD = "correct horse battery staple"


@dataclass
class AppRig:
    port: int
    """The proxy's one port."""
    app_port: int
    """The peer app's own port (direct access, the bench's baseline)."""
    tmp: Path
    access: AppAccess
    audit: Recorder
    locks: LockWatcher
    registry: LiveRegistry
    alice: Identity
    bob: Identity
    ca_file: Path
    """The host TLS CA (verifies the proxy)."""
    app_log: Path
    web_sessions: WebSessions
    tls_files: tuple[Path, Path]
    """The proxy's certificate and key (a peer reverse proxy in the bench uses them too)."""
    carol: Identity | None = None
    """``webauthn`` rigs: the user whose app ``admin`` takes per-session MFA."""
    auth: AuthServer | None = None

    def url(self, app: str, path: str = "/") -> str:
        return f"https://{app}.{DOMAIN}:{self.port}{path}"

    def resolve(self, *apps: str) -> list[str]:
        """``curl --resolve`` arguments for the proxy's names."""
        out = []
        for name in (*apps, ""):
            host = f"{name}.{DOMAIN}" if name else DOMAIN
            out += ["--resolve", f"{host}:{self.port}:127.0.0.1"]
        return out

    async def cert_files(self, identity: Identity, app: str, name: str) -> tuple[Path, Path]:
        """What ``bsh apps login APP`` writes: (certificate, key) files."""
        key_pem, pub = new_tls_key()
        cert = await self.access.app_cert(identity, pub, app, timedelta(hours=1), "rig")
        crt, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        crt.write_text(cert.cert_pem)
        key.write_bytes(key_pem)
        key.chmod(0o600)
        return crt, key

    async def enrol_totp(self, user: str) -> str:
        """Give ``user`` a TOTP device (as ``bsh mfa add --type totp`` would); its secret."""
        assert self.auth is not None
        secret = pyotp.random_base32()
        await self.auth.mfa.record_totp(user, "phone", secret, 0, "rig")
        return secret

    async def mfa_cert_files(
        self, identity: Identity, app: str, name: str, otp: str
    ) -> tuple[Path, Path]:
        """What ``bsh apps login APP`` writes for a per-session MFA app answered with ``otp``."""
        key_pem, pub = new_tls_key()
        cert = await self.access.mfa_cert(identity, pub, app, "rig", otp=otp)
        crt, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        crt.write_text(cert.cert_pem)
        key.write_bytes(key_pem)
        key.chmod(0o600)
        return crt, key

    async def cookie(self, identity: Identity, app: str) -> str:
        """An app session token as the browser flow leaves it (web session, code, redeem)."""
        web_token = await self.web_sessions.create(identity, "password")
        bound = SESSION_PREFIX + hash_secret(web_token)
        code = await self.access.sessions.new_code(identity, app, bound)
        token, _ = await self.access.sessions.redeem(code, app)
        return token

    def app_requests(self) -> list[str]:
        return self.app_log.read_text().splitlines() if self.app_log.exists() else []


async def _start_peer(
    tmp: Path, jwks_url: str, ca: Path, audience: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(  # noqa: ASYNC220 -- starts it; readline runs in a thread
            [
                sys.executable,
                "-m",
                "bastion.testing.peers.app",
                "--port",
                str(port),
                "--jwks",
                jwks_url,
                "--ca",
                str(ca),
                "--audience",
                audience.replace("{port}", str(port)),
                "--log",
                str(log),
            ],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if line and json.loads(line).get("ready") == port:
            return proc, port
        proc.kill()
        proc.wait()
    raise RuntimeError("the peer app did not start")


@asynccontextmanager
async def start_app_rig(
    tmp: Path,
    *,
    audit_requests: Literal["all", "writes", "none"] = "all",
    webauthn: bool = False,
    sqlite: bool = False,
    audit_request_sample: float = 1.0,
) -> AsyncIterator[AppRig]:
    """Start everything; stop it all on exit. ``webauthn``: second factors optional, WebAuthn
    for ``https://proxy.test:PORT``, and app ``admin`` (``env=mfa``) reachable by user
    ``carol`` (password :data:`PASSWORD`) only with per-session MFA (role
    ``apps-mfa``). ``sqlite``: auth over the SQLite backend of ``bastion start``, and
    ``audit`` only counts events (benchmarks). ``audit_request_sample``: the route's
    sample rate of GET/HEAD ``app.request`` events."""
    clock = SystemClock()
    async with rig_auth(tmp, clock, sqlite=sqlite) as auth:
        async with _app_rig(
            tmp, clock, auth, audit_requests, webauthn, sqlite, audit_request_sample
        ) as rig:
            yield rig


@asynccontextmanager
async def _app_rig(
    tmp: Path,
    clock: SystemClock,
    auth: AuthServer,
    audit_requests: Literal["all", "writes", "none"],
    webauthn: bool,
    keep_counts_only: bool,
    audit_request_sample: float = 1.0,
) -> AsyncIterator[AppRig]:
    users = UserService(auth)
    await auth.init(second_factor="off")
    await auth.roles.create(
        Role(
            metadata=Metadata(name="apps-dev"),
            spec=RoleSpec(allow=RoleConditions(app_labels={"env": "dev"})),
        )
    )
    await auth.roles.create(Role(metadata=Metadata(name="plain"), spec=RoleSpec()))
    alice = await _user(users, "alice", ["apps-dev"])
    bob = await _user(users, "bob", ["plain"])
    app = build_app(auth, rate=1000.0, burst=1000, max_body=1 << 20)
    access = app[APP_ACCESS]
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    registry = LiveRegistry()
    audit = Recorder(auth.audit, keep=not keep_counts_only)
    locks = LockWatcher(clock=clock, audit=audit, registry=registry, grace=0)
    hour = timedelta(hours=1)
    proxy_key, proxy_pub = new_tls_key()
    proxy_id = Identity(
        cluster=CLUSTER,
        user="proxy",
        kind="host",
        roles=("proxy",),
        host_id="proxy",
        expires=clock.now() + hour,
    )
    pcerts = await auth.issuer.issue_host(
        proxy_id, proxy_pub, ["proxy"], [DOMAIN, f"*.{DOMAIN}"], ["127.0.0.1"], hour, "rig"
    )
    ca_file = tmp / "host-ca.pem"
    ca_file.write_text(pcerts.tls_host_ca)
    route = AppRoute(
        AppRouteDeps(
            access=access,
            domain=DOMAIN,
            audit=audit,
            registry=registry,
            clock=clock,
            locks=locks,
            gate=Gate.for_auth(auth),
            audit_requests=audit_requests,
            audit_request_sample=audit_request_sample,
        )
    )
    await route.start()
    assert runner.server is not None
    tls = ProxyTLS(pcerts.tls_cert, proxy_key.decode(), pcerts.tls_user_ca, pcerts.tls_host_ca)
    listener = ProxyListener(
        ListenerConfig(port=0, max_unauthenticated_per_ip=4096, max_unauthenticated_total=8192),
        ListenerDeps(tls=tls, clock=clock, audit=audit, web=runner.server, app=route),
    )
    await listener.start()
    log = tmp / "app-access.log"
    jwks_url = f"https://127.0.0.1:{listener.port}/.well-known/jwks.json"
    proc, app_port = await _start_peer(tmp, jwks_url, ca_file, "http://127.0.0.1:{port}", log)
    carol: Identity | None = None
    try:
        if webauthn:
            carol = await _webauthn_setup(auth, users, listener.port, app_port, access)
        for name, env in (("grafana", "dev"), ("vault", "prod")):
            await access.register(
                App(
                    metadata=Metadata(name=name, labels={"env": env}),
                    spec=AppSpec(
                        uri=f"http://127.0.0.1:{app_port}",
                        rewrite=AppRewrite(
                            headers=[
                                AppHeader(name="X-App-Name", value=name),
                                AppHeader(name="X-Forwarded-User", value="{{internal.logins}}"),
                            ]
                        ),
                    ),
                )
            )
        crt, key = tmp / "proxy.crt", tmp / "proxy.key"
        crt.write_text(pcerts.tls_cert)
        key.write_bytes(proxy_key)
        yield AppRig(
            listener.port,
            app_port,
            tmp,
            access,
            audit,
            locks,
            registry,
            alice,
            bob,
            ca_file,
            log,
            WebSessions(auth.deps.backend, clock),
            (crt, key),
            carol,
            auth,
        )
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait)
        await listener.close()
        await route.close()
        await runner.cleanup()


async def _webauthn_setup(
    auth: AuthServer, users: UserService, port: int, app_port: int, access: AppAccess
) -> Identity:
    pref = await auth.auth_preference()
    pref.spec.second_factor = "optional"
    pref.spec.webauthn = WebAuthnPreference(rp_id=DOMAIN, origins=[f"https://{DOMAIN}:{port}"])
    await auth.prefs.upsert(pref)
    await auth.roles.create(
        Role(
            metadata=Metadata(name="apps-mfa"),
            spec=RoleSpec(
                allow=RoleConditions(app_labels={"env": "mfa"}),
                options=RoleOptions(require_session_mfa=True),
            ),
        )
    )
    carol = await _user(users, "carol", ["apps-mfa"])
    await access.register(
        App(
            metadata=Metadata(name="admin", labels={"env": "mfa"}),
            spec=AppSpec(uri=f"http://127.0.0.1:{app_port}"),
        )
    )
    return carol


async def _user(users: UserService, name: str, roles: list[str]) -> Identity:
    invite = await users.add_user(name, roles, [name], {}, "admin")
    await users.start_invite(invite.token)
    _, pub = new_tls_key()
    certs = await users.complete_invite(invite.token, PASSWORD, "", pub, timedelta(hours=1), "rig")
    identity: Identity = certs.identity
    return identity
