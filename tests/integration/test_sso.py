"""SSO end to end against real peers: npm's oidc-provider (OIDC), a pysaml2 IdP (SAML), a fake
GitHub API (aiohttp; GitHub itself cannot run here), with the real daemon and bsh."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import BIN, Cluster, Env, free_port
from sso_peers import (
    Browser,
    FakeGitHub,
    OIDCPeer,
    SAMLIdPServer,
    browser_command,
    query_of,
    start_oidc_provider,
)

from bastion.testing import require_binary

pytestmark = pytest.mark.integration

CONNECTOR = "oidc-test"
ACCOUNTS = {
    "alice": {
        "preferred_username": "alice",
        "email": "alice@example.com",
        "groups": ["team-dev", "everyone"],
    },
    "mallory": {"preferred_username": "mallory", "email": "m@example.com", "groups": ["sales"]},
}


@pytest.fixture(scope="module")
def oidc(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCPeer]:
    work = tmp_path_factory.mktemp("oidc")
    redirect = f"https://{cluster.proxy}/web/sso/{CONNECTOR}/callback"
    peer = start_oidc_provider(work, free_port(), [redirect], ACCOUNTS)
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def oidc_env(env: Env, oidc: OIDCPeer, tmp_path: Path) -> Env:
    role = tmp_path / "roles.yaml"
    role.write_text(
        "kind: role\nmetadata: {name: sso-dev}\nspec:\n  allow:\n"
        "    logins: ['{{external.preferred_username}}']\n"
        "    node_labels: {'*': '*'}\n"
        "---\n"
        f"kind: oidc\nmetadata: {{name: {CONNECTOR}}}\nspec:\n"
        f"  issuer_url: {oidc.issuer}\n"
        f"  client_id: {oidc.client_id}\n"
        f"  client_secret: {oidc.client_secret}\n"
        "  scopes: [openid, email, profile, groups]\n"
        "  username_claim: preferred_username\n"
        "  display: Test IdP\n"
        "  claims_to_roles:\n"
        "    - {claim: groups, value: '^team-(dev)$', roles: ['sso-$1']}\n"
    )
    env.admin_ok("create", "-f", str(role), "--force")
    return env


def sso_events(env: Env, outcome: str) -> list[dict[str, object]]:
    return [e for e in env.events("--type", "sso.login") if e["outcome"] == outcome]


def test_connector_secret_is_redacted(oidc_env: Env) -> None:
    shown = json.loads(oidc_env.admin_ok("get", f"oidc/{CONNECTOR}", "--format", "json"))
    text = json.dumps(shown)
    assert "bastion-test-client-secret" not in text
    assert "redacted" in text


def test_bad_connector_names_the_field(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: oidc\nmetadata: {name: broken}\nspec:\n  issuer_url: http://idp.example.com\n"
        "  client_id: x\n  claims_to_roles: [{claim: groups, value: '^(a$', roles: [r]}]\n"
        "  allowed_algorithms: [none]\n"
    )
    result = env.admin("create", "-f", str(bad))
    assert result.returncode != 0
    assert "spec.issuer_url" in result.stderr
    assert "spec.claims_to_roles[0]" in result.stderr
    assert "spec.allowed_algorithms" in result.stderr


def test_unknown_connector_is_a_clear_error(env: Env, cluster: Cluster) -> None:
    result = env.bsh(
        env.root, "login", f"--proxy={cluster.proxy}", f"--ca-pin={cluster.pin}", "--auth=nope"
    )
    assert result.returncode != 0 and 'no SSO connector "nope"' in result.stderr
    assert "Traceback" not in result.stderr
    headless = env.bsh(env.root, "login", f"--proxy={cluster.proxy}", "--headless", "--user=x")
    assert headless.returncode != 0 and "--headless works with --auth" in headless.stderr


def test_bsh_login_with_oidc_in_the_browser(oidc_env: Env, cluster: Cluster) -> None:
    home = oidc_env.root / "alice"
    home.mkdir()
    result = subprocess.run(
        [
            str(BIN / "bsh"),
            "login",
            f"--proxy={cluster.proxy}",
            f"--ca-pin={cluster.pin}",
            f"--auth={CONNECTOR}",
        ],
        env={**os.environ, "BSH_HOME": str(home), "BROWSER": browser_command("alice")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(oidc_env.bsh(home, "status", "--format", "json").stdout)
    profile = status["profiles"][0]
    assert profile["user"] == f"{CONNECTOR}:alice"
    assert profile["roles"] == ["sso-dev"]
    assert profile["logins"] == ["alice"]
    ok = [e for e in sso_events(oidc_env, "success") if e["user"] == f"{CONNECTOR}:alice"]
    assert ok and ok[-1]["fields"]["subject"] == "alice"
    assert ok[-1]["fields"]["issuer"].startswith("http://127.0.0.1:")


def test_headless_login_prints_url_and_waits(oidc_env: Env, cluster: Cluster) -> None:
    home = oidc_env.root / "headless"
    home.mkdir()
    proc = subprocess.Popen(
        [
            str(BIN / "bsh"),
            "login",
            f"--proxy={cluster.proxy}",
            f"--ca-pin={cluster.pin}",
            f"--auth={CONNECTOR}",
            "--headless",
        ],
        env={**os.environ, "BSH_HOME": str(home), "BROWSER": "false"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    url = code = ""
    for line in proc.stderr:
        if "https://" in line:
            url = line.strip()
        if "code" in line and "Check" in line:
            code = line.split("code ", 1)[1].split(".")[0]
            break
    assert url and code

    async def browse() -> str:
        browser = Browser(login="alice")
        try:
            first = await browser.request("GET", url)
            assert code in first.text  # the confirmation page shows the request code
            final = await browser.sign_in(url)
            return final.text
        finally:
            await browser.close()

    import asyncio

    page = asyncio.run(browse())
    assert "Return to your terminal" in page
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{CONNECTOR}:alice" in out


def test_claims_mapping_to_no_role_is_refused_and_audited(oidc_env: Env, cluster: Cluster) -> None:
    home = oidc_env.root / "mallory"
    home.mkdir()
    result = subprocess.run(
        [
            str(BIN / "bsh"),
            "login",
            f"--proxy={cluster.proxy}",
            f"--ca-pin={cluster.pin}",
            f"--auth={CONNECTOR}",
        ],
        env={**os.environ, "BSH_HOME": str(home), "BROWSER": browser_command("mallory")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert f'connector "{CONNECTOR}"' in result.stderr
    assert "sales" in result.stderr and "groups" in result.stderr
    assert "Traceback" not in result.stderr
    failures = [e for e in sso_events(oidc_env, "failure") if "sales" in str(e["reason"])]
    assert failures and failures[-1]["user"] == f"{CONNECTOR}:mallory"


async def _start_request(cluster: Cluster) -> tuple[Browser, str, str]:
    """A login request made like bsh does, and a browser sent to the IdP (not following it)."""
    from cryptography.hazmat.primitives import serialization

    from bastion.client.profile import new_client_key

    key = new_client_key().public_key()
    public = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    browser = Browser()
    async with browser.session.post(
        f"https://{cluster.proxy}/v1/sso/requests",
        json={
            "connector": CONNECTOR,
            "public_key": public,
            "secret": "s" * 40,
            "client_redirect": "http://127.0.0.1:9/callback/x",
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    async with browser.session.get(
        f"https://{cluster.proxy}{created['login_path']}", allow_redirects=False
    ) as resp:
        assert resp.status == 303
        idp_url = resp.headers["Location"]
    return browser, created["request_id"], idp_url


def test_state_mismatch_is_refused_and_audited(oidc_env: Env, cluster: Cluster) -> None:
    import asyncio

    async def scenario() -> tuple[int, str, int, str]:
        browser, _, idp_url = await _start_request(cluster)
        try:
            params = query_of(idp_url)
            assert params["code_challenge_method"] == "S256" and params["nonce"]
            callback = f"https://{cluster.proxy}/web/sso/{CONNECTOR}/callback"
            forged = await browser.request("GET", f"{callback}?code=x&state={params['state']}x")
            # The right state from a browser without the login cookie (another victim's browser)
            other = Browser()
            try:
                stolen = await other.request("GET", f"{callback}?code=x&state={params['state']}")
            finally:
                await other.close()
            return forged.status, forged.text, stolen.status, stolen.text
        finally:
            await browser.close()

    status, text, other_status, other_text = asyncio.run(scenario())
    assert status == 403 and "state mismatch" in text
    assert other_status == 403 and "another browser" in other_text
    reasons = [str(e["reason"]) for e in sso_events(oidc_env, "failure")]
    assert any("state mismatch" in r for r in reasons)
    assert any("another browser" in r for r in reasons)


def test_result_needs_secret_and_browser_code(oidc_env: Env, cluster: Cluster) -> None:
    import asyncio

    async def scenario() -> list[int]:
        browser, request_id, _ = await _start_request(cluster)
        try:
            statuses = []
            for body in ({"secret": "t" * 40}, {"secret": "s" * 40, "code": "nope"}):
                async with browser.session.post(
                    f"https://{cluster.proxy}/v1/sso/requests/{request_id}/result", json=body
                ) as resp:
                    statuses.append(resp.status)
            return statuses
        finally:
            await browser.close()

    # wrong secret: refused; right secret while the login is still pending: not yet a result
    wrong_secret, pending = asyncio.run(scenario())
    assert wrong_secret == 403
    assert pending == 200


def test_login_page_has_sso_button_and_strict_headers(oidc_env: Env, cluster: Cluster) -> None:
    import asyncio

    async def scenario() -> tuple[str, dict[str, str], list[str]]:
        browser = Browser()
        try:
            async with browser.session.get(f"https://{cluster.proxy}/web/login") as resp:
                text = await resp.text()
                cookies = resp.headers.getall("Set-Cookie", [])
                return text, dict(resp.headers), cookies
        finally:
            await browser.close()

    text, headers, cookies = asyncio.run(scenario())
    assert f"/web/sso/{CONNECTOR}/login" in text and "Test IdP" in text
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert cookies and all("HttpOnly" in c and "Secure" in c and "SameSite" in c for c in cookies)


def test_browser_sso_sign_in_creates_a_web_session(oidc_env: Env, cluster: Cluster) -> None:
    import asyncio

    async def scenario() -> str:
        browser = Browser(login="alice")
        try:
            final = await browser.sign_in(f"https://{cluster.proxy}/web/sso/{CONNECTOR}/login")
            return final.text
        finally:
            await browser.close()

    page = asyncio.run(scenario())
    assert f"Signed in as <strong>{CONNECTOR}:alice</strong>" in page


# ---- GitHub (fake API: GitHub cannot run here) and SAML (pysaml2 IdP over HTTP) -------------

GITHUB = "github-test"
SAML = "saml-test"
SAML_SP = "https://bastion.test/saml"


def bsh_sso_login(
    env: Env, cluster: Cluster, connector: str, name: str
) -> subprocess.CompletedProcess[str]:
    home = env.root / name
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [
            str(BIN / "bsh"),
            "login",
            f"--proxy={cluster.proxy}",
            f"--ca-pin={cluster.pin}",
            f"--auth={connector}",
        ],
        env={**os.environ, "BSH_HOME": str(home), "BROWSER": browser_command(name)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def profile_of(env: Env, name: str) -> dict[str, object]:
    status = json.loads(env.bsh(env.root / name, "status", "--format", "json").stdout)
    profile: dict[str, object] = status["profiles"][0]
    return profile


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub("gh-client", "gh-secret-0123456789")
    fake.users = {"octo": (4242, ["acme/admins", "acme/web"]), "nobody": (7, ["other/x"])}
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def github_env(env: Env, github: FakeGitHub, tmp_path: Path) -> Env:
    spec = tmp_path / "github.yaml"
    url = github.server.url
    spec.write_text(
        "kind: role\nmetadata: {name: gh-dev}\nspec:\n  allow:\n"
        "    logins: ['{{external.login}}']\n---\n"
        f"kind: github\nmetadata: {{name: {GITHUB}}}\nspec:\n"
        f"  client_id: {github.client_id}\n  client_secret: {github.client_secret}\n"
        f"  endpoint_url: {url}\n  api_endpoint_url: {url}/api/v3\n"
        "  teams_to_roles:\n    - {organization: acme, team: admins, roles: [gh-dev]}\n"
    )
    env.admin_ok("create", "-f", str(spec), "--force")
    return env


def test_bsh_login_with_github(github_env: Env, cluster: Cluster, github: FakeGitHub) -> None:
    github.current = "octo"
    result = bsh_sso_login(github_env, cluster, GITHUB, "octo")
    assert result.returncode == 0, result.stderr
    profile = profile_of(github_env, "octo")
    assert profile["user"] == f"{GITHUB}:octo" and profile["roles"] == ["gh-dev"]
    assert profile["logins"] == ["octo"]
    ok = [e for e in sso_events(github_env, "success") if e["user"] == f"{GITHUB}:octo"]
    assert ok[-1]["fields"]["subject"] == "4242" and ok[-1]["fields"]["method"] == "github"


def test_github_user_in_no_mapped_team_is_refused(
    github_env: Env, cluster: Cluster, github: FakeGitHub
) -> None:
    github.current = "nobody"
    result = bsh_sso_login(github_env, cluster, GITHUB, "nobody")
    assert result.returncode != 0
    assert f'connector "{GITHUB}"' in result.stderr and "other/x" in result.stderr


@pytest.fixture(scope="module")
def saml_idp(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SAMLIdPServer]:
    require_binary("xmlsec1")
    acs = f"https://{cluster.proxy}/web/sso/{SAML}/acs"
    server = SAMLIdPServer(tmp_path_factory.mktemp("saml"), SAML_SP, acs)
    server.attributes = {"alice": {"groups": ["dev"], "uid": ["alice"]}, "eve": {"groups": ["x"]}}
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def saml_env(env: Env, saml_idp: SAMLIdPServer, tmp_path: Path) -> Env:
    saml_idp.sign_assertion, saml_idp.audience = True, SAML_SP
    descriptor = "\n".join("    " + line for line in saml_idp.idp.metadata.splitlines())
    spec = tmp_path / "saml.yaml"
    spec.write_text(
        "kind: role\nmetadata: {name: saml-dev}\nspec:\n  allow:\n"
        "    logins: ['{{external.uid}}']\n---\n"
        f"kind: saml\nmetadata: {{name: {SAML}}}\nspec:\n"
        f"  service_provider_issuer: {SAML_SP}\n"
        "  attributes_to_roles:\n    - {name: groups, value: dev, roles: [saml-dev]}\n"
        f"  entity_descriptor: |\n{descriptor}\n"
    )
    env.admin_ok("create", "-f", str(spec), "--force")
    return env


def test_bsh_login_with_saml(saml_env: Env, cluster: Cluster, saml_idp: SAMLIdPServer) -> None:
    saml_idp.current = "alice"
    result = bsh_sso_login(saml_env, cluster, SAML, "alice-saml")
    assert result.returncode == 0, result.stderr
    profile = profile_of(saml_env, "alice-saml")
    assert profile["user"] == f"{SAML}:alice" and profile["logins"] == ["alice"]
    ok = [e for e in sso_events(saml_env, "success") if e["user"] == f"{SAML}:alice"]
    assert ok[-1]["fields"]["issuer"] == saml_idp.idp.entity_id


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"sign_assertion": False}, "Signature missing for assertion"),
        ({"audience": "https://other-sp.test"}, "AudienceRestrictions"),
        ({"current": "eve"}, f'connector "{SAML}"'),
    ],
)
def test_bad_saml_responses_are_refused_and_audited(
    saml_env: Env, cluster: Cluster, saml_idp: SAMLIdPServer, setup: dict[str, object], reason: str
) -> None:
    saml_idp.current = "alice"
    for key, value in setup.items():
        setattr(saml_idp, key, value)
    result = bsh_sso_login(saml_env, cluster, SAML, f"bad-{len(reason)}")
    assert result.returncode != 0
    assert reason in result.stderr and "Traceback" not in result.stderr
    assert any(reason in str(e["reason"]) for e in sso_events(saml_env, "failure"))


@pytest.mark.parametrize(
    ("param", "value", "reason"),
    [
        ("nonce", "an-injected-nonce", "nonce does not match"),
        ("code_challenge", "A" * 43, "refused POST"),  # PKCE: the verifier no longer matches
    ],
)
def test_tampered_authorization_request_is_refused_by_the_real_provider(
    oidc_env: Env, cluster: Cluster, param: str, value: str, reason: str
) -> None:
    """The IdP URL is changed on its way through the browser; oidc-provider issues what it was
    asked for, and the proxy refuses the result."""
    import asyncio
    from urllib.parse import urlencode, urlsplit, urlunsplit

    async def scenario() -> tuple[int, str]:
        browser, _, idp_url = await _start_request(cluster)
        try:
            parts = urlsplit(idp_url)
            query = {**query_of(idp_url), param: value}
            tampered = urlunsplit(parts._replace(query=urlencode(query)))
            final = await browser.sign_in(tampered)
            return final.status, final.text
        finally:
            await browser.close()

    status, text = asyncio.run(scenario())
    assert status == 403 and reason in text
    assert any(reason in str(e["reason"]) for e in sso_events(oidc_env, "failure"))
