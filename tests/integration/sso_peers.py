"""Real SSO peers for the tests: npm's oidc-provider, a pysaml2 IdP, a fake GitHub API, and a
scripted browser (HTTP with cookies) that clicks through them.

oidc-provider is installed with ``npm ci`` from tests/peers/oidc/package-lock.json into a cache
directory ($BASTION_TEST_CACHE, default ~/.cache/bastion-tests) the first time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

from bastion.testing import missing_peer, require_binary

PEER_DIR = Path(__file__).resolve().parent.parent / "peers" / "oidc"
CACHE = Path(os.environ.get("BASTION_TEST_CACHE", Path.home() / ".cache" / "bastion-tests"))


def oidc_provider_dir() -> Path:
    """A directory with provider.mjs and node_modules (``npm ci`` run once per lockfile)."""
    require_binary("node")
    npm = require_binary("npm")
    lock = (PEER_DIR / "package-lock.json").read_bytes()
    target = CACHE / f"oidc-{hashlib.sha256(lock).hexdigest()[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # xdist workers: one npm ci at a time
        _install(npm, target)
        shutil.copy(PEER_DIR / "provider.mjs", target / "provider.mjs")
    return target


def _install(npm: str, target: Path) -> None:
    if not (target / "node_modules" / "oidc-provider").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PEER_DIR / name, target / name)
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            missing_peer(f"npm ci of oidc-provider failed: {result.stderr[-500:]}")


@dataclass
class OIDCPeer:
    issuer: str
    client_id: str
    client_secret: str
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_oidc_provider(
    work: Path, port: int, redirect_uris: list[str], accounts: dict[str, dict[str, Any]]
) -> OIDCPeer:
    directory = oidc_provider_dir()
    client = {
        "client_id": "bastion",
        "client_secret": "bastion-test-client-secret-0123456789",
        "redirect_uris": redirect_uris,
        "response_types": ["code"],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    config = work / "oidc-provider.json"
    config.write_text(json.dumps({"port": port, "clients": [client], "accounts": accounts}))
    log = (work / "oidc-provider.log").open("w")
    proc = subprocess.Popen(
        ["node", str(directory / "provider.mjs"), str(config)],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return OIDCPeer(line.split()[1], client["client_id"], client["client_secret"], proc)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"oidc-provider did not start: {(work / 'oidc-provider.log').read_text()}")


# ---- a scripted browser --------------------------------------------------------------------


@dataclass
class Visit:
    url: str
    status: int
    text: str


_FORM = re.compile(r"<form[^>]*action=\"([^\"]+)\"[^>]*>(.*?)</form>", re.S | re.I)
_INPUT = re.compile(r"<input[^>]*>", re.I)
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


def forms(html: str) -> list[tuple[str, dict[str, str]]]:
    """``(action, {name: value})`` of each form (hidden and valued inputs)."""
    out = []
    for action, body in _FORM.findall(html):
        fields: dict[str, str] = {}
        for tag in _INPUT.findall(body):
            attrs = dict(_ATTR.findall(tag))
            if "name" in attrs:
                fields[attrs["name"]] = unescape(attrs.get("value", ""))
        out.append((unescape(action), fields))
    return out


class Browser:
    """Follows redirects and submits the IdP's forms like a user would (no JavaScript)."""

    def __init__(self, login: str = "alice", password: str = "any-password") -> None:
        self.login = login
        self.password = password
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.history: list[str] = []

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, url: str, data: dict[str, str] | None = None) -> Visit:
        """One request, then redirects (GET) until a page that is not a redirect."""
        for _ in range(20):
            self.history.append(url)
            async with self.session.request(method, url, data=data, allow_redirects=False) as resp:
                text = await resp.text(errors="replace")
                if resp.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, resp.headers["Location"])
                    method, data = "GET", None
                    continue
                return Visit(str(resp.url), resp.status, text)
        raise AssertionError(f"redirect loop: {self.history[-5:]}")

    async def sign_in(self, start_url: str) -> Visit:
        """Open ``start_url`` and click through: oidc-provider's login and consent pages, a
        headless confirmation page, and a SAML IdP's auto-submitting form."""
        visit = await self.request("GET", start_url)
        for _ in range(6):
            found = forms(visit.text)
            if not found:
                return visit
            action, fields = found[0]
            if "/interaction/" in visit.url and fields.get("prompt") == "login":
                fields.update(login=self.login, password=self.password)
            elif not (
                "/interaction/" in visit.url
                or "SAMLResponse" in fields
                or "/web/sso/" in action
                and "request" in fields
            ):
                return visit
            visit = await self.request("POST", urljoin(visit.url, action), fields)
        return visit


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


BROWSER_SCRIPT = Path(__file__).with_name("sso_browser.py")


def browser_command(login: str) -> str:
    """A ``$BROWSER`` value that runs the scripted browser (for ``bsh login --auth``)."""
    return f"{sys.executable} {BROWSER_SCRIPT} --login {login} %s"


# ---- in-test HTTP peers (the fake GitHub API, the pysaml2 IdP) on a background loop ---------


class ThreadServer:
    """Serve an aiohttp app on 127.0.0.1 from a background thread (the daemon under test is
    another process, so the peer must keep answering while the test blocks on subprocesses)."""

    def __init__(self, app: Any) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class FakeGitHub:
    """GitHub's OAuth endpoints and the two REST calls Bastion makes, with real checks of the
    client secret, the redirect URI and the PKCE verifier. ``users`` maps a login to
    ``(numeric id, ["org/team", ...])``; ``current`` is who is signed in at "github"."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        import base64 as b64

        from aiohttp import web

        self.client_id, self.client_secret = client_id, client_secret
        self.users: dict[str, tuple[int, list[str]]] = {}
        self.current = ""
        self._codes: dict[str, tuple[str, str, str]] = {}  # code -> (login, redirect, challenge)
        self._tokens: dict[str, str] = {}

        async def authorize(request: web.Request) -> web.Response:
            q = request.query
            if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256":
                return web.Response(status=400, text="bad client or no PKCE")
            code = f"code-{len(self._codes)}-{self.current}"
            self._codes[code] = (self.current, q["redirect_uri"], q["code_challenge"])
            raise web.HTTPFound(f"{q['redirect_uri']}?code={code}&state={q['state']}")

        async def token(request: web.Request) -> web.Response:
            form = await request.post()
            entry = self._codes.pop(str(form.get("code")), None)
            if (
                entry is None
                or form.get("client_secret") != self.client_secret
                or form.get("redirect_uri") != entry[1]
            ):
                return web.json_response({"error": "bad_verification_code"})
            digest = hashlib.sha256(str(form.get("code_verifier")).encode()).digest()
            if b64.urlsafe_b64encode(digest).rstrip(b"=").decode() != entry[2]:
                return web.json_response({"error": "invalid_grant (PKCE)"})
            access = f"gho_{len(self._tokens)}x"
            self._tokens[access] = entry[0]
            return web.json_response({"access_token": access, "token_type": "bearer"})

        def who(request: web.Request) -> str:
            auth = request.headers.get("Authorization", "")
            login = self._tokens.get(auth.removeprefix("Bearer "))
            if login is None:
                raise web.HTTPUnauthorized()
            return login

        async def user(request: web.Request) -> web.Response:
            login = who(request)
            return web.json_response({"login": login, "id": self.users[login][0]})

        async def teams(request: web.Request) -> web.Response:
            login = who(request)
            page = int(request.query.get("page", "1"))
            slugs = self.users[login][1][(page - 1) * 100 : page * 100]
            return web.json_response(
                [
                    {"slug": s.split("/")[1], "organization": {"login": s.split("/")[0]}}
                    for s in slugs
                ]
            )

        app = web.Application()
        app.router.add_get("/login/oauth/authorize", authorize)
        app.router.add_post("/login/oauth/access_token", token)
        app.router.add_get("/api/v3/user", user)
        app.router.add_get("/api/v3/user/teams", teams)
        self.server = ThreadServer(app)


class SAMLIdPServer:
    """The pysaml2 test IdP over HTTP: ``GET /sso`` (HTTP-Redirect AuthnRequest) answers with
    the auto-submitting form a real IdP sends (HTTP-POST binding to the ACS)."""

    def __init__(self, work: Path, sp_entity_id: str, acs_url: str) -> None:
        from html import escape

        from aiohttp import web

        from bastion.testing.peers.saml import SAMLTestIdP

        self.attributes: dict[str, dict[str, list[str]]] = {}
        self.current = "alice"
        self.sign_assertion = True
        self.audience = sp_entity_id
        port_holder: dict[str, int] = {}

        async def sso(request: web.Request) -> web.Response:
            request_id, acs, relay = self.idp.parse_request(str(request.url))
            response = self.idp.respond(
                request_id,
                acs,
                self.audience,
                self.current,
                self.attributes.get(self.current, {}),
                sign_assertion=self.sign_assertion,
            )
            body = (
                f'<form method="post" action="{escape(acs)}">'
                f'<input type="hidden" name="SAMLResponse" value="{escape(response)}">'
                f'<input type="hidden" name="RelayState" value="{escape(relay)}">'
                "<noscript><button>Continue</button></noscript></form>"
            )
            return web.Response(text=body, content_type="text/html")

        app = web.Application()
        app.router.add_get("/sso", sso)
        self.server = ThreadServer(app)
        port_holder["port"] = self.server.port
        self.idp = SAMLTestIdP.create(
            work,
            sps=[(sp_entity_id, acs_url), ("https://other-sp.test", "https://other-sp.test/acs")],
            entity_id=f"{self.server.url}/metadata",
            sso_url=f"{self.server.url}/sso",
        )
