"""The ``oidc`` join method: a CI platform's OIDC token instead of a secret (issue 18).

Layer: auth. :func:`verify_join_token` is pure (values in, claims out): joserfc checks the
signature with the issuer's JSON Web Key Set, only the token resource's asymmetric algorithms
are accepted (``alg: none`` and HMAC never are), then ``iss``, ``aud``, ``exp``/``nbf``/``iat``
and the allow rules on claims (``repository``, ``ref``, ``environment``...).
:class:`JWKSCache` fetches the key set over HTTPS only (discovery, then ``jwks_uri``), keeps it
for :data:`JWKS_TTL`, and refetches once for an unknown key id (the issuer rotated its keys).
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import AccessDenied, ConnectionProblem
from bastion.types.access import OIDCJoinSpec

__all__ = [
    "JWKS_TTL",
    "LEEWAY",
    "JWKSCache",
    "JoinTokenError",
    "claims_allowed",
    "key_id",
    "verify_join_token",
]

LEEWAY = timedelta(seconds=30)
JWKS_TTL = 600.0
"""Seconds a fetched key set is used before it is fetched again."""
MAX_TOKEN = 16 * 1024
MAX_JWKS = 256 * 1024


class JoinTokenError(AccessDenied):
    """The OIDC token was refused (the message says why; it is audited)."""


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3:
        raise JoinTokenError("the OIDC token is not a compact JWS (three dot-separated parts)")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        raise JoinTokenError("the OIDC token header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise JoinTokenError("the OIDC token header is not a JSON object")
    return header


def key_id(token: str) -> str:
    kid = _header(token).get("kid")
    return kid if isinstance(kid, str) else ""


def claims_allowed(claims: Mapping[str, Any], rules: list[dict[str, str]]) -> bool:
    """Does any rule match? A rule matches when every claim it names equals its value; a
    value ending in ``*`` matches that prefix (``refs/heads/release/*``)."""

    def one(rule: dict[str, str]) -> bool:
        for name, want in rule.items():
            got = claims.get(name)
            if not isinstance(got, str):
                return False
            if want.endswith("*") and got.startswith(want[:-1]):
                continue
            if got != want:
                return False
        return True

    return any(one(rule) for rule in rules)


def verify_join_token(
    token: str, jwks: dict[str, Any], spec: OIDCJoinSpec, now: datetime
) -> dict[str, Any]:
    """The verified claims of ``token`` (pure).

    Raises:
        JoinTokenError: the reason (algorithm, signature, issuer, audience, expiry, rules).
    """
    alg = _header(token).get("alg")
    if not isinstance(alg, str) or alg not in spec.algorithms:
        raise JoinTokenError(
            f"OIDC token algorithm {alg!r} is not allowed (allowed: {', '.join(spec.algorithms)})"
        )
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise JoinTokenError(f"the issuer's JWKS is unusable: {exc}") from None
    try:
        claims: dict[str, Any] = dict(jwt.decode(token, keys, algorithms=spec.algorithms).claims)
    except JoseError as exc:
        raise JoinTokenError(f"OIDC token signature is invalid ({exc.error})") from None
    except (ValueError, TypeError):
        raise JoinTokenError("OIDC token signature is invalid (malformed token)") from None
    if claims.get("iss") != spec.issuer:
        raise JoinTokenError(f"OIDC token issuer {claims.get('iss')!r} is not {spec.issuer!r}")
    aud = claims.get("aud")
    if spec.audience not in (aud if isinstance(aud, list) else [aud]):
        raise JoinTokenError(f"OIDC token audience {aud!r} is not {spec.audience!r}")
    stamp, leeway = now.timestamp(), LEEWAY.total_seconds()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float) or exp + leeway < stamp:
        raise JoinTokenError(f"OIDC token expired (exp {exp!r}, now {int(stamp)})")
    if isinstance(nbf, int | float) and nbf - leeway > stamp:
        raise JoinTokenError(f"OIDC token not valid yet (nbf/iat {nbf!r}, now {int(stamp)})")
    if not claims_allowed(claims, spec.allow):
        shown = {k: claims.get(k) for rule in spec.allow for k in rule}
        raise JoinTokenError(f"OIDC token claims {shown} match no allow rule of the join token")
    return claims


class JWKSCache:
    """Issuers' key sets, fetched over HTTPS and kept for :data:`JWKS_TTL` seconds.

    Args:
        ssl_context: the trust for issuers (None: the system's CA bundle).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, ttl: float = JWKS_TTL) -> None:
        self._ssl = ssl_context
        self._ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def keys(self, spec: OIDCJoinSpec, kid: str = "") -> dict[str, Any]:
        """The key set of ``spec``'s issuer; refetched when stale or missing ``kid``.

        Raises:
            ConnectionProblem: the issuer cannot be reached or answers no key set.
        """
        cached = self._cache.get(spec.issuer)
        fresh = cached is not None and time.monotonic() - cached[0] < self._ttl
        if cached is not None and fresh and (not kid or _has_kid(cached[1], kid)):
            return cached[1]
        jwks = await self._fetch(spec)
        self._cache[spec.issuer] = (time.monotonic(), jwks)
        return jwks

    async def _fetch(self, spec: OIDCJoinSpec) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=10)
        ssl_arg: ssl.SSLContext | bool = self._ssl if self._ssl is not None else True
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                uri = spec.jwks_uri
                if not uri:
                    doc = await _get_json(
                        http, f"{spec.issuer}/.well-known/openid-configuration", ssl_arg
                    )
                    uri = str(doc.get("jwks_uri", ""))
                if not uri.startswith("https://"):
                    raise ConnectionProblem(f"the issuer's jwks_uri {uri[:200]!r} is not https")
                jwks = await _get_json(http, uri, ssl_arg)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConnectionProblem(f"cannot fetch the JWKS of {spec.issuer}: {exc}") from None
        if not isinstance(jwks.get("keys"), list):
            raise ConnectionProblem(f"{spec.issuer} answered no JSON key set")
        return jwks


async def _get_json(
    http: aiohttp.ClientSession, url: str, ssl_arg: ssl.SSLContext | bool
) -> dict[str, Any]:
    if not url.startswith("https://"):
        raise ConnectionProblem(f"{url[:200]!r}: OIDC issuers are fetched over https only")
    async with http.get(url, ssl=ssl_arg, allow_redirects=False) as resp:
        if resp.status != 200:
            raise ConnectionProblem(f"{url} answered HTTP {resp.status}")
        body = await resp.content.read(MAX_JWKS + 1)
        if len(body) > MAX_JWKS:
            raise ConnectionProblem(f"{url}: response too large")
        data = json.loads(body)
    if not isinstance(data, dict):
        raise ConnectionProblem(f"{url}: not a JSON object")
    return data


def _has_kid(jwks: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in jwks.get("keys", []))
