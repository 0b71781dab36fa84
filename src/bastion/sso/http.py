"""The HTTP client the connectors use to talk to identity providers.

Layer: sso (IO edge). Every request has a timeout and a size bound; failures become
:class:`~bastion.errors.ConnectionProblem` (provider unreachable) or
:class:`~bastion.errors.AccessDenied` (the provider said no), with the URL and the status, never
with a secret (form bodies and tokens are not logged).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from bastion.errors import AccessDenied, ConnectionProblem

__all__ = ["HTTP", "MAX_RESPONSE", "IdPRefused"]

MAX_RESPONSE = 1 << 20
"""Largest provider response read (discovery, JWKS, tokens, user and team lists)."""
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


class IdPRefused(AccessDenied):
    """The provider answered with an HTTP error (``status``, OAuth ``error`` code when given)."""

    def __init__(self, message: str, status: int, error: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class HTTP:
    """A small JSON client; one ``aiohttp`` session per request keeps it free of shared state."""

    def __init__(self, timeout: aiohttp.ClientTimeout = TIMEOUT) -> None:
        self._timeout = timeout

    async def get_json(self, url: str, headers: dict[str, str] | None = None) -> Any:
        return await self._request("GET", url, headers=headers or {})

    async def post_form(
        self,
        url: str,
        form: dict[str, str],
        basic_auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        auth = aiohttp.BasicAuth(*basic_auth) if basic_auth else None
        return await self._request("POST", url, headers=headers or {}, data=form, auth=auth)

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {"Accept": "application/json", **kwargs["headers"]}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.request(method, url, allow_redirects=False, **kwargs) as resp,
            ):
                raw = await resp.content.read(MAX_RESPONSE + 1)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ConnectionProblem(
                f"cannot reach the identity provider at {url}: {exc or 'timeout'}"
            ) from None
        if len(raw) > MAX_RESPONSE:
            raise AccessDenied(f"the identity provider's answer from {url} is too large")
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if status >= 400:
            detail = error = ""
            if isinstance(data, dict):
                detail = str(data.get("error_description") or data.get("error") or "")[:200]
                error = str(data.get("error") or "")[:100]
            raise IdPRefused(
                f"the identity provider refused {method} {url}: HTTP {status}"
                + (f" ({detail})" if detail else ""),
                status,
                error,
            )
        if data is None:
            raise AccessDenied(f"the identity provider's answer from {url} is not JSON")
        return data
