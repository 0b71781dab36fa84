"""GitHub-style OAuth2: authorization code (with PKCE), then ``GET /user`` and ``/user/teams``.

Layer: sso. :func:`authorization_url` and :func:`teams_claims` are pure; :class:`GithubProvider`
does the HTTP against the connector's ``endpoint_url`` (OAuth) and ``api_endpoint_url`` (REST),
so GitHub Enterprise (and the tests' fake API) work the same way.

The identity is keyed by the numeric user id (logins can be renamed and reused); ``teams`` holds
``org/team`` slugs, matched by ``teams_to_roles``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from bastion.errors import AccessDenied
from bastion.sso.http import HTTP
from bastion.sso.mapping import Rule, SSOIdentity
from bastion.types.connectors import GithubConnector

__all__ = ["MAX_TEAM_PAGES", "GithubProvider", "authorization_url", "rules", "teams_claims"]

MAX_TEAM_PAGES = 10
"""At most 1000 teams are read (100 per page)."""


def authorization_url(
    connector: GithubConnector, redirect_uri: str, state: str, code_verifier: str
) -> str:
    spec = connector.spec
    query = urlencode(
        {
            "client_id": spec.client_id,
            "redirect_uri": redirect_uri,
            "scope": "read:org",
            "state": state,
            "code_challenge": create_s256_code_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{spec.endpoint_url}/login/oauth/authorize?{query}"


def rules(connector: GithubConnector) -> list[Rule]:
    """``teams_to_roles`` as mapping rules over the ``teams`` claim (``org/team`` values)."""
    return [
        Rule("teams", f"{m.organization}/{m.team}", tuple(m.roles))
        for m in connector.spec.teams_to_roles
    ]


def teams_claims(teams: list[Any]) -> list[str]:
    """``org/team`` slugs from a ``/user/teams`` page (entries without both are skipped)."""
    out = []
    for team in teams:
        if not isinstance(team, dict):
            continue
        org = team.get("organization")
        login = org.get("login") if isinstance(org, dict) else None
        slug = team.get("slug")
        if isinstance(login, str) and isinstance(slug, str) and login and slug:
            out.append(f"{login}/{slug}")
    return out


class GithubProvider:
    def __init__(self, connector: GithubConnector, http: HTTP) -> None:
        self.connector = connector
        self._http = http

    async def exchange(self, code: str, code_verifier: str, redirect_uri: str) -> str:
        """Trade the code for an access token (GitHub answers errors with HTTP 200)."""
        spec = self.connector.spec
        body = await self._http.post_form(
            f"{spec.endpoint_url}/login/oauth/access_token",
            {
                "client_id": spec.client_id,
                "client_secret": spec.client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
        )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            error = (
                body.get("error_description") or body.get("error") if isinstance(body, dict) else ""
            )
            raise AccessDenied(f"GitHub refused the authorization code ({error or 'no token'})")
        return token

    async def identity(self, token: str) -> SSOIdentity:
        spec = self.connector.spec
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        user = await self._http.get_json(f"{spec.api_endpoint_url}/user", headers)
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            raise AccessDenied("GitHub's /user answer has no login")
        if not isinstance(user.get("id"), int):
            raise AccessDenied("GitHub's /user answer has no numeric id")
        teams: list[str] = []
        for page in range(1, MAX_TEAM_PAGES + 1):
            batch = await self._http.get_json(
                f"{spec.api_endpoint_url}/user/teams?per_page=100&page={page}", headers
            )
            if not isinstance(batch, list):
                raise AccessDenied("GitHub's /user/teams answer is not a list")
            teams.extend(teams_claims(batch))
            if len(batch) < 100:
                break
        return SSOIdentity(
            connector=self.connector.name,
            kind="github",
            issuer=spec.endpoint_url,
            subject=str(user["id"]),
            username=user["login"],
            claims={"login": [user["login"]], "teams": teams},
        )
