"""OpenID Connect: authorization code with PKCE (S256), state and nonce; ID token verification.

Layer: sso. :func:`authorization_url` and :func:`verify_id_token` are pure (the clock is passed
in); :class:`OIDCProvider` does the HTTP (discovery, JWKS, token endpoint) through an
:class:`~bastion.sso.http.HTTP` client. authlib builds the grant URI and the PKCE challenge;
joserfc verifies the signature.

The ID token must be signed with an algorithm the connector allows (asymmetric only: ``none``
and ``HS*`` are refused before any key is looked at), by a key of the provider's JWKS (looked up
by ``kid``; an unknown ``kid`` refetches the JWKS once, for key rotation), and carry the
connector's issuer, its client id in ``aud`` (and ``azp`` when several audiences), the nonce
of this login, an ``exp`` in the future and an ``iat`` not in the future (both with
:data:`LEEWAY`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import AccessDenied
from bastion.sso.http import HTTP
from bastion.sso.mapping import SSOIdentity, TokenSet, normalize_claims
from bastion.types.connectors import OIDCConnector

__all__ = [
    "LEEWAY",
    "Discovery",
    "IDTokenError",
    "OIDCProvider",
    "GOOGLE_ISSUER",
    "authorization_url",
    "token_header",
    "verify_id_token",
]

LEEWAY = timedelta(seconds=60)
"""Clock skew tolerated on ``exp`` and ``iat``."""


class IDTokenError(AccessDenied):
    """The ID token (or the token response) is not acceptable; the message says why."""


@dataclass(frozen=True, slots=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""

    @classmethod
    def parse(cls, doc: Any, expected_issuer: str) -> Discovery:
        if not isinstance(doc, dict):
            raise AccessDenied("OIDC discovery document is not a JSON object")
        try:
            found = cls(
                issuer=str(doc["issuer"]),
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                userinfo_endpoint=str(doc.get("userinfo_endpoint") or ""),
            )
        except KeyError as exc:
            raise AccessDenied(f"OIDC discovery document lacks {exc.args[0]!r}") from None
        if found.issuer != expected_issuer:
            raise AccessDenied(
                f"OIDC discovery names issuer {found.issuer!r}, the connector expects "
                f"{expected_issuer!r}"
            )
        return found


GOOGLE_ISSUER = "https://accounts.google.com"


def authorization_url(
    discovery: Discovery,
    connector: OIDCConnector,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
) -> str:
    """The URL that sends the browser to the provider's login. Google gives a refresh token
    (needed by the periodic re-validation, :mod:`bastion.sso.revalidate`) only when asked for
    ``access_type=offline``; other providers go by the ``offline_access`` scope."""
    spec = connector.spec
    extra: dict[str, str] = {}
    if discovery.issuer.rstrip("/") == GOOGLE_ISSUER and spec.revalidate_interval > timedelta(0):
        extra["access_type"] = "offline"
    return str(
        prepare_grant_uri(
            discovery.authorization_endpoint,
            spec.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(spec.scopes),
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(code_verifier),
            code_challenge_method="S256",
            **extra,
        )
    )


def token_header(token: str) -> dict[str, Any]:
    """The decoded JOSE header of a compact JWT (unverified).

    Raises:
        IDTokenError: not a compact JWS.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise IDTokenError("ID token is not a compact JWS (three dot-separated parts)")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        raise IDTokenError("ID token header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise IDTokenError("ID token header is not a JSON object")
    return header


def verify_id_token(
    token: str,
    jwks: dict[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: list[str],
    now: datetime,
    leeway: timedelta = LEEWAY,
) -> dict[str, Any]:
    """Verify an ID token; returns its claims.

    Raises:
        IDTokenError: with the reason (algorithm, key, signature, iss, aud, azp, nonce, exp, iat).
    """
    alg = token_header(token).get("alg")
    if alg not in algorithms:
        raise IDTokenError(
            f"ID token algorithm {alg!r} is not allowed (allowed: {', '.join(algorithms)})"
        )
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise IDTokenError(f"the provider's JWKS is unusable: {exc}") from None
    try:
        claims: dict[str, Any] = dict(jwt.decode(token, keys, algorithms=algorithms).claims)
    except JoseError as exc:
        raise IDTokenError(f"ID token signature is invalid ({exc.error})") from None
    except (ValueError, TypeError):
        raise IDTokenError("ID token signature is invalid (malformed token)") from None
    _check_claims(claims, issuer, client_id, nonce, now, leeway)
    return claims


def _check_claims(
    claims: dict[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    now: datetime,
    leeway: timedelta,
) -> None:
    if claims.get("iss") != issuer:
        raise IDTokenError(f"ID token issuer {claims.get('iss')!r} is not {issuer!r}")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if client_id not in audiences:
        raise IDTokenError(f"ID token audience {aud!r} does not include {client_id!r}")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IDTokenError(f"ID token azp {claims.get('azp')!r} is not {client_id!r}")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise IDTokenError("ID token has no subject (sub)")
    if not isinstance(claims.get("nonce"), str) or not _equal(claims["nonce"], nonce):
        raise IDTokenError("ID token nonce does not match this login (replayed or injected)")
    stamp = now.timestamp()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + leeway.total_seconds() < stamp:
        raise IDTokenError(f"ID token expired (exp {exp!r}, now {int(stamp)})")
    if not isinstance(iat, int | float) or iat - leeway.total_seconds() > stamp:
        raise IDTokenError(f"ID token issued in the future (iat {iat!r}, now {int(stamp)})")


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class OIDCProvider:
    """The IO side: discovery, JWKS and the token endpoint of one connector's provider."""

    def __init__(self, connector: OIDCConnector, http: HTTP) -> None:
        self.connector = connector
        self._http = http
        self._discovery: Discovery | None = None
        self._jwks: dict[str, Any] | None = None

    async def discovery(self) -> Discovery:
        if self._discovery is None:
            issuer = self.connector.spec.issuer_url
            doc = await self._http.get_json(
                issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            self._discovery = Discovery.parse(doc, issuer)
        return self._discovery

    async def jwks(self, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            doc = await self._http.get_json((await self.discovery()).jwks_uri)
            if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                raise AccessDenied("the provider's JWKS is not a JSON key set")
            self._jwks = doc
        return self._jwks

    async def exchange(self, code: str, code_verifier: str, redirect_uri: str) -> str:
        """Trade the authorization code for tokens; returns the raw ID token."""
        return (await self.exchange_tokens(code, code_verifier, redirect_uri)).id_token

    async def exchange_tokens(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        """Trade the authorization code for tokens (ID, access and refresh token)."""
        spec = self.connector.spec
        body = await self._http.post_form(
            (await self.discovery()).token_endpoint,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
            basic_auth=(spec.client_id, spec.client_secret),
        )
        token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise IDTokenError("the provider's token response has no id_token")
        return _token_set(body, token)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Use a refresh token (the provider refuses it once the user is gone: IdPRefused)."""
        spec = self.connector.spec
        body = await self._http.post_form(
            (await self.discovery()).token_endpoint,
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            basic_auth=(spec.client_id, spec.client_secret),
        )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise IDTokenError("the provider's refresh response has no access_token")
        return _token_set(body, str(body.get("id_token") or ""), refresh_token)

    async def userinfo(self, access_token: str) -> dict[str, list[str]]:
        """The userinfo endpoint's claims, normalized (IdPRefused 401: token or user gone)."""
        endpoint = (await self.discovery()).userinfo_endpoint
        if not endpoint:
            raise AccessDenied("the provider has no userinfo endpoint")
        doc = await self._http.get_json(endpoint, {"Authorization": f"Bearer {access_token}"})
        if not isinstance(doc, dict):
            raise AccessDenied("the provider's userinfo answer is not a JSON object")
        return normalize_claims(doc)

    async def identity(self, id_token: str, nonce: str, now: datetime) -> SSOIdentity:
        """Verify ``id_token`` (refetching the JWKS once for an unknown key id)."""
        spec = self.connector.spec
        kid = token_header(id_token).get("kid")
        jwks = await self.jwks()
        if kid and not any(k.get("kid") == kid for k in jwks["keys"] if isinstance(k, dict)):
            jwks = await self.jwks(refresh=True)
        claims = verify_id_token(
            id_token,
            jwks,
            issuer=spec.issuer_url,
            client_id=spec.client_id,
            nonce=nonce,
            algorithms=spec.allowed_algorithms,
            now=now,
        )
        normalized = normalize_claims(claims)
        username = (normalized.get(spec.username_claim) or [""])[0]
        if not username:
            raise IDTokenError(
                f'connector "{self.connector.name}": the ID token has no {spec.username_claim!r} '
                "claim (username_claim)"
            )
        return SSOIdentity(
            connector=self.connector.name,
            kind="oidc",
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            username=username,
            claims=normalized,
        )


def _token_set(body: dict[str, Any], id_token: str, refresh_token: str = "") -> TokenSet:
    expires_in = body.get("expires_in")
    return TokenSet(
        id_token=id_token,
        access_token=str(body.get("access_token") or ""),
        refresh_token=str(body.get("refresh_token") or refresh_token),
        expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
    )
