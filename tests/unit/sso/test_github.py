from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bastion.errors import AccessDenied
from bastion.sso.github import GithubProvider, authorization_url, rules, teams_claims
from bastion.sso.mapping import map_roles
from bastion.types.connectors import GithubConnector

CONNECTOR = GithubConnector.model_validate(
    {
        "metadata": {"name": "gh"},
        "spec": {
            "client_id": "cid",
            "client_secret": "cs",
            "endpoint_url": "https://ghe.example.com/",
            "api_endpoint_url": "https://ghe.example.com/api/v3",
            "teams_to_roles": [
                {"organization": "acme", "team": "admins", "roles": ["editor"]},
                {"organization": "acme", "team": "*", "roles": ["access"]},
            ],
        },
    }
)


def test_authorization_url() -> None:
    url = authorization_url(CONNECTOR, "https://proxy/cb", "st", "v" * 50)
    assert url.startswith("https://ghe.example.com/login/oauth/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["state"] == "st" and query["scope"] == "read:org"
    assert query["code_challenge_method"] == "S256"


def test_teams_to_roles() -> None:
    teams = teams_claims(
        [
            {"slug": "admins", "organization": {"login": "acme"}},
            {"slug": "web", "organization": {"login": "other"}},
            {"slug": "x"},
            "junk",
        ]
    )
    assert teams == ["acme/admins", "other/web"]
    assert map_roles(rules(CONNECTOR), {"teams": teams}) == ["editor", "access"]


class FakeAPI:
    def __init__(self, token_answer: Any, teams: int = 3) -> None:
        self.token_answer = token_answer
        self.teams = teams
        self.urls: list[str] = []

    async def post_form(self, url: str, form: dict[str, str], **kw: Any) -> Any:
        assert form["client_secret"] == "cs"
        return self.token_answer

    async def get_json(self, url: str, headers: dict[str, str] | None = None) -> Any:
        self.urls.append(url)
        assert headers and headers["Authorization"] == "Bearer tok"
        if url.endswith("/user"):
            return {"login": "octo", "id": 42}
        page = int(parse_qs(urlsplit(url).query)["page"][0])
        start = (page - 1) * 100
        count = max(0, min(100, self.teams - start))
        return [{"slug": f"t{start + i}", "organization": {"login": "acme"}} for i in range(count)]


async def test_identity_reads_user_and_all_team_pages() -> None:
    api = FakeAPI({"access_token": "tok"}, teams=150)
    provider = GithubProvider(CONNECTOR, api)  # type: ignore[arg-type]
    token = await provider.exchange("code", "verifier", "https://proxy/cb")
    identity = await provider.identity(token)
    assert identity.subject == "42" and identity.user == "gh:octo"
    assert identity.issuer == "https://ghe.example.com"
    assert len(identity.claims["teams"]) == 150
    assert sum("/user/teams" in u for u in api.urls) == 2


async def test_github_errors_with_http_200_are_refused() -> None:
    provider = GithubProvider(CONNECTOR, FakeAPI({"error": "bad_verification_code"}))  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="bad_verification_code"):
        await provider.exchange("code", "v", "https://proxy/cb")
