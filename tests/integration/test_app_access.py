"""App access end to end: a real aiohttp app (own process, verifies the JWT against the JWKS
the proxy publishes), curl with mTLS, and a browser's redirects and cookies (aiohttp client)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bastion.proxy.app_route import COOKIE
from bastion.testing import new_tls_key, require_binary
from bastion.testing.app_rig import DOMAIN, PASSWORD, AppRig, start_app_rig
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.identity import RouteToTarget
from bastion.types.meta import Metadata

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[AppRig]:
    async with start_app_rig(tmp_path) as started:
        yield started


async def _curl(rig: AppRig, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("curl"),
        "-sS",
        "--cacert",
        str(rig.ca_file),
        *rig.resolve("grafana", "vault", "nosuch"),
        "-w",
        "\n%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    body, _, code = out.decode().rpartition("\n")
    return int(code or 0), body + err.decode()


class Browser:
    """Follows nothing by itself: each hop is checked. Resolves *.proxy.test to 127.0.0.1."""

    def __init__(self, rig: AppRig, http: aiohttp.ClientSession) -> None:
        self.rig, self.http = rig, http
        self.ctx = ssl.create_default_context(cafile=str(rig.ca_file))
        self.jar: dict[str, dict[str, str]] = {}

    async def go(
        self, method: str, url: str, data: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        cookies = "; ".join(f"{k}={v}" for k, v in self.jar.get(host, {}).items())
        target = f"https://127.0.0.1:{parts.port}{parts.path}" + (
            f"?{parts.query}" if parts.query else ""
        )
        headers = {"Host": parts.netloc, **({"Cookie": cookies} if cookies else {})}
        async with self.http.request(
            method,
            aiohttp.client.URL(target, encoded=True),
            headers=headers,
            data=data,
            ssl=self.ctx,
            server_hostname=host,
            allow_redirects=False,
        ) as got:
            for morsel in got.cookies.values():
                self.jar.setdefault(host, {})[morsel.key] = morsel.value
            location = got.headers.get("Location", "")
            if location.startswith("/"):
                location = f"https://{parts.netloc}{location}"
            return got.status, location, await got.text()


async def test_curl_mtls_jwt_headers_and_scanners(rig: AppRig) -> None:
    crt, key = await rig.cert_files(rig.alice, "grafana", "alice")
    # A certificate routed to grafana: the app verifies the JWT against the proxy's JWKS.
    code, body = await _curl(
        rig,
        "--cert",
        str(crt),
        "--key",
        str(key),
        "-H",
        "X-Forwarded-User: root",
        "-H",
        "Bastion-Jwt-Assertion: forged",
        "-H",
        "Cookie: a=1; " + COOKIE + "=stolen",
        rig.url("grafana", "/x/%2e%2e/whoami"),
    )
    assert code == 200, body
    seen = json.loads(body)
    assert seen["claims"]["sub"] == "alice" and seen["claims"]["roles"] == ["apps-dev"]
    assert seen["claims"]["aud"] == f"http://127.0.0.1:{rig.app_port}"
    assert seen["claims"]["exp"] - seen["claims"]["iat"] <= 60
    assert seen["headers"]["X-Forwarded-User"] == "alice"  # the rewrite's template, not root
    assert seen["headers"]["X-App-Name"] == "grafana"
    assert seen["path"] == "/whoami"  # normalized once
    assert seen["cookies"] == {"a": "1"}  # our cookie never reaches the app
    # The same certificate at another app: refused (it is routed to grafana only).
    before = len(rig.app_requests())
    code, body = await _curl(rig, "--cert", str(crt), "--key", str(key), rig.url("vault"))
    assert code == 302 and "/web/apps/vault/launch" not in body
    # Unauthenticated scanners, known or unknown app: the same login redirect, never the app.
    for app in ("grafana", "nosuch"):
        code, _ = await _curl(rig, "-o", "/dev/null", rig.url(app, "/admin?x=1"))
        assert code == 302
        code, _ = await _curl(rig, "-X", "POST", "-d", "x", rig.url(app, "/upload"))
        assert code == 401
    assert len(rig.app_requests()) == before
    # Streaming both ways through the proxy.
    big = rig.tmp / "big.bin"
    big.write_bytes(b"z" * (3 << 20))
    code, body = await _curl(
        rig, "--cert", str(crt), "--key", str(key), "-T", str(big), "-X", "POST",
        rig.url("grafana", "/upload"),
    )  # fmt: skip
    assert code == 200 and json.loads(body)["size"] == 3 << 20
    code, body = await _curl(
        rig, "--cert", str(crt), "--key", str(key), rig.url("grafana", "/stream?n=40")
    )
    assert code == 200 and len(body) == 40 * 65536
    # HTTP/2 where the client asks for it (curl does by default): the same, translated to
    # HTTP/1.1 towards the app, bodies streamed both ways within HTTP/2 flow control.
    h2 = ("--http2", "--cert", str(crt), "--key", str(key), "-w", "v%{http_version}\n%{http_code}")
    code, body = await _curl(rig, *h2, "-T", str(big), "-X", "POST", rig.url("grafana", "/upload"))
    assert code == 200 and body.endswith("}v2"), body
    assert json.loads(body[:-2])["size"] == 3 << 20
    code, body = await _curl(rig, *h2, rig.url("grafana", "/stream?n=40"))
    assert code == 200 and body.endswith("v2") and len(body) == 40 * 65536 + 2
    requests = rig.audit.of("app.request")
    assert any(e["path"] == "/upload" and e["bytes_in"] == 3 << 20 for e in requests)
    assert rig.audit.of("app.session.start")


async def test_browser_login_cookie_binding_logout_and_lock(rig: AppRig) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        b = Browser(rig, http)
        status, to_launch, _ = await b.go("GET", rig.url("grafana", "/whoami"))
        assert status == 302 and f"{DOMAIN}:{rig.port}/web/apps/grafana/launch" in to_launch
        status, to_login, _ = await b.go("GET", to_launch)
        assert status == 303 and "/web/login?then=" in to_login
        status, _, page = await b.go("GET", to_login)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        then = re.search(r'name="then" value="([^"]+)"', page)
        assert csrf and then and then.group(1).startswith("/web/apps/grafana/launch")
        login_url = f"https://{DOMAIN}:{rig.port}/web/login"
        form = {"csrf_token": csrf.group(1), "user": "alice", "password": PASSWORD}
        status, back, _ = await b.go("POST", login_url, {**form, "then": then.group(1)})
        assert status == 303 and "/web/apps/grafana/launch" in back
        status, _, launch = await b.go("GET", back)
        refresh = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', launch)
        assert status == 200 and refresh, launch
        to_app = html.unescape(refresh.group(1))
        assert to_app.startswith(rig.url("grafana", "/x-bastion-auth?code="))
        status, final, _ = await b.go("GET", to_app)
        assert status == 303 and final == rig.url("grafana", "/whoami")
        assert COOKIE in b.jar[f"grafana.{DOMAIN}"]
        # The code is single-use.
        assert (await b.go("GET", to_app))[0] == 403
        status, _, body = await b.go("GET", final)
        assert status == 200 and json.loads(body)["claims"]["sub"] == "alice"
        # The grafana cookie presented at vault: refused (login redirect, never the app).
        token = b.jar[f"grafana.{DOMAIN}"][COOKIE]
        b.jar[f"vault.{DOMAIN}"] = {COOKIE: token}
        assert (await b.go("GET", rig.url("vault", "/whoami")))[0] == 302
        # A WebSocket through the proxy; a lock ends it within a second.
        cookie = f"{COOKIE}={token}"
        async with http.ws_connect(
            f"https://127.0.0.1:{rig.port}/ws",
            headers={"Host": f"grafana.{DOMAIN}:{rig.port}", "Cookie": cookie},
            ssl=b.ctx,
            server_hostname=f"grafana.{DOMAIN}",
        ) as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "ping"
            lock = Lock(
                metadata=Metadata(name="stolen"),
                spec=LockSpec(target=LockTarget(user="alice"), message="laptop stolen"),
            )
            rig.locks.put(lock)
            started = asyncio.get_running_loop().time()
            await rig.locks.enforce([lock])
            msg = await ws.receive(timeout=2)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert asyncio.get_running_loop().time() - started < 1.0
        assert (await b.go("GET", final))[0] == 404  # locked: refused at once
        rig.locks.delete("stolen")
        await asyncio.sleep(1.1)  # admission cache
        assert (await b.go("GET", final))[0] == 200
        # Logout ends the app session within a second.
        status, _, home = await b.go("GET", f"https://{DOMAIN}:{rig.port}/web/")
        csrf2 = re.search(r'name="csrf_token" value="([^"]+)"', home)
        assert csrf2
        logout = f"https://{DOMAIN}:{rig.port}/web/logout"
        assert (await b.go("POST", logout, {"csrf_token": csrf2.group(1)}))[0] == 303
        await asyncio.sleep(1.1)
        assert (await b.go("GET", final))[0] == 302
        # Open redirects after login: refused, the browser lands on /web/ (each sign-in
        # makes a new web session: done last).
        for evil in ("//evil.example", "https:evil.example", "/%2F%2Fevil.example",
                     "https://evil.example/", "https://grafana.proxy.test.evil.example/",
                     "/web/%2e%2e/%2e%2e//evil", "https://user@grafana.proxy.test/",
                     "/\\evil.example"):  # fmt: skip
            status, where, _ = await b.go("POST", login_url, {**form, "then": evil})
            assert status == 303 and where == f"https://{DOMAIN}:{rig.port}/web/", evil


async def test_bob_sees_no_difference_between_forbidden_and_missing(rig: AppRig) -> None:
    roles: Any = await rig.access.list_allowed(rig.bob)
    assert roles == []
    assert [a.metadata.name for a in await rig.access.list_allowed(rig.alice)] == ["grafana"]
    messages = []
    for name in ("vault", "nosuch"):
        with pytest.raises(Exception) as caught:
            await rig.access.authorize(rig.alice, name)
        messages.append(str(caught.value).replace(name, "X"))
    assert messages[0] == messages[1]
    keys = (await rig.access.jwks())["keys"]
    assert keys and keys[0]["alg"] == "ES256" and "d" not in keys[0]


def _chromium_app_flow(rig: AppRig) -> dict[str, Any]:
    """Headless Chromium: an unauthenticated visit, the login redirect, signing in, the app
    page with its cookie, then a WebSocket echo from the app's page (runs in a thread)."""
    from browser import chromium_browser

    rules = f"MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1"
    with chromium_browser(args=[f"--host-resolver-rules={rules}"]) as chromium:
        context = chromium.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(rig.url("grafana", "/whoami"))
        page.wait_for_url(f"https://{DOMAIN}:{rig.port}/web/login**")
        page.fill("input[name=user]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action='/web/login'] button[type=submit]")
        page.wait_for_url(rig.url("grafana", "/whoami"))
        seen = json.loads(page.inner_text("body"))
        cookies = {c["name"]: c for c in context.cookies(rig.url("grafana"))}
        echo = page.evaluate(
            """url => new Promise((resolve, reject) => {
                const ws = new WebSocket(url);
                ws.onopen = () => ws.send("ping from chromium");
                ws.onmessage = (m) => { resolve(m.data); ws.close(); };
                ws.onerror = () => reject(new Error("websocket failed"));
            })""",
            f"wss://grafana.{DOMAIN}:{rig.port}/ws",
        )
        context.close()
    return {"seen": seen, "cookie": cookies.get(COOKIE), "echo": echo}


async def test_chromium_login_redirect_app_page_and_websocket(rig: AppRig) -> None:
    got = await asyncio.to_thread(_chromium_app_flow, rig)
    assert got["seen"]["claims"]["sub"] == "alice"
    assert got["seen"]["headers"]["X-Forwarded-User"] == "alice"
    cookie = got["cookie"]
    assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    assert got["echo"] == "ping from chromium"
    assert any(e.get("websocket") for e in rig.audit.of("app.request"))


def _chromium_mfa_step_up(rig: AppRig) -> dict[str, Any]:
    """Carol registers a security key (Chromium's virtual authenticator), then opens an app
    whose role requires per-session MFA: the launch page asks for the key before the cookie."""
    from browser import chromium_browser, virtual_authenticator

    rules = f"MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1"
    base = f"https://{DOMAIN}:{rig.port}"
    with chromium_browser(args=[f"--host-resolver-rules={rules}"]) as chromium:
        context = chromium.new_context(ignore_https_errors=True)
        page = context.new_page()
        virtual_authenticator(context, page)
        page.goto(f"{base}/web/login")
        page.fill("input[name=user]", "carol")
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action='/web/login'] button[type=submit]")
        page.wait_for_url(f"{base}/web/")
        page.goto(f"{base}/web/mfa")
        page.click("button[data-ceremony=register]")
        page.wait_for_selector("#webauthn-status:has-text('Registered')")
        page.goto(rig.url("admin", "/whoami"))
        step_up = page.inner_text("body")
        page.click("button[data-ceremony=verify]")
        page.wait_for_url(rig.url("admin", "/whoami"))
        seen = json.loads(page.inner_text("body"))
        context.close()
    return {"step_up": step_up, "seen": seen}


async def test_per_session_mfa_app_takes_a_webauthn_step_up(tmp_path: Path) -> None:
    async with start_app_rig(tmp_path, audit_requests="none", webauthn=True) as rig:
        got = await asyncio.to_thread(_chromium_mfa_step_up, rig)
        assert "asks for your security key" in got["step_up"]
        assert got["seen"]["claims"]["sub"] == "carol"
        starts = [e for e in rig.audit.of("app.session.start") if e["app"] == "admin"]
        assert starts and starts[0]["user"] == "carol"


async def test_curl_per_session_mfa_app_needs_the_mfa_scoped_certificate(tmp_path: Path) -> None:
    """bsh apps login for an app that takes per-session MFA: the plain certificate is refused
    at the proxy, the MFA-scoped one (answered with a TOTP code) reaches the app."""
    from harness import User, fresh_totp

    async with start_app_rig(tmp_path, audit_requests="none", webauthn=True) as rig:
        assert rig.carol is not None
        secret = await rig.enrol_totp("carol")
        # A plain certificate routed to admin, as an older bsh would hold it.
        plain = rig.carol.model_copy(
            update={"route": RouteToTarget(cluster=rig.carol.cluster, app="admin")}
        )
        key_pem, pub = new_tls_key()
        issued = await rig.auth.issuer.issue_user(plain, pub, "rig")  # type: ignore[union-attr]
        crt, key = rig.tmp / "plain.crt", rig.tmp / "plain.key"
        crt.write_text(issued.tls_cert)
        key.write_bytes(key_pem)
        before = len(rig.app_requests())
        resolve = ("--resolve", f"admin.{DOMAIN}:{rig.port}:127.0.0.1")
        code, body = await _curl(
            rig, *resolve, "--cert", str(crt), "--key", str(key), rig.url("admin", "/whoami")
        )
        assert code in (302, 403, 404) and "claims" not in body, (code, body)
        assert len(rig.app_requests()) == before  # never reached the app
        user = User(name="carol", home=tmp_path, secret=secret)
        crt, key = await rig.mfa_cert_files(rig.carol, "admin", "carol", fresh_totp(user))
        code, body = await _curl(
            rig, *resolve, "--cert", str(crt), "--key", str(key), rig.url("admin", "/whoami")
        )
        assert code == 200, body
        assert json.loads(body)["claims"]["sub"] == "carol"


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A cluster of its own: the proxy this test joins heartbeats into it, and agents of a
    shared cluster would follow that proxy (and lose it when the test stops it)."""
    from harness import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("standalone-app-proxy"))
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_standalone_proxy_serves_apps_through_auths_api(
    own_cluster: Any, tmp_path: Path
) -> None:
    """A proxy in its own process serves app hosts: the app session, RBAC and the JWT are
    asked of auth over its API (docs/app-access.md); an unauthenticated client still gets the
    login redirect and never reaches the app."""
    import subprocess
    import sys

    from harness import Env, start_proxy, stop, unique

    from bastion.testing.peers.ports import free_port

    env = Env(own_cluster, tmp_path)
    port, app_port = free_port(), free_port()
    name, role = unique("sa"), unique("sarole")
    app_log = tmp_path / "app.log"
    peer = subprocess.Popen(
        [
            sys.executable, "-m", "bastion.testing.peers.app", "--port", str(app_port),
            "--jwks", f"https://{env.cluster.proxy}/.well-known/jwks.json",
            "--ca", str(env.cluster.data_dir / "admin" / "ca.pem"),
            "--audience", f"http://127.0.0.1:{app_port}", "--log", str(app_log),
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    starting = asyncio.ensure_future(asyncio.to_thread(start_proxy, env, tmp_path, port))
    try:
        env.admin_ok(
            "create", "-f", "-",
            input=f"kind: role\nmetadata: {{name: {role}}}\nspec:\n  allow:\n"
            f"    app_labels: {{env: {role}}}\n---\nkind: app\n"
            f"metadata: {{name: {name}, labels: {{env: {role}}}}}\n"
            f"spec: {{uri: 'http://127.0.0.1:{app_port}'}}\n",
        )  # fmt: skip
        user, invite = env.add_user(role)
        assert env.accept_invite(user, invite["token"]).returncode == 0
        assert env.bsh(user, "apps", "login", name).returncode == 0
        crt = next(user.home.rglob(f"apps/{name}.crt"))

        proc, _ = await starting
        host = f"{name}.apps.localhost:{port}"

        async def curl(*args: str) -> tuple[str, str]:
            run = await asyncio.create_subprocess_exec(
                require_binary("curl"), "-sS", "--cacert", str(crt.with_suffix(".ca")),
                "--resolve", f"{host}:127.0.0.1", "-w", "\n%{http_code}", *args,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(run.communicate(), 20)
            body, _, code = out.decode().rpartition("\n")
            return code, body

        code, _ = await curl("-o", "/dev/null", f"https://{host}/whoami")
        assert code == "302"  # nobody: the login pages, never the app
        assert not app_log.exists() or "/whoami" not in app_log.read_text()
        code, body = await curl(
            "--cert", str(crt), "--key", str(crt.with_suffix(".key")), f"https://{host}/whoami"
        )
        assert code == "200", (code, body, (tmp_path / "proxy.log").read_text()[-2000:])
        seen = json.loads(body)  # the app verified the JWT auth signed for this proxy
        assert seen["claims"]["sub"] == user.name and seen["path"] == "/whoami"
    finally:
        with contextlib.suppress(Exception):  # a proxy that failed to start failed the test
            await asyncio.to_thread(stop, (await starting)[0])
        await asyncio.to_thread(stop, peer)
