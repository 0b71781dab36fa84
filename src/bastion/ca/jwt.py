"""JSON Web Tokens of the cluster's ``jwt`` CA: the identity assertion apps receive.

Layer: ``ca`` (pure over ``cryptography`` and ``joserfc``; no IO, the time is passed in). Every
request the proxy forwards to an app carries ``Bastion-Jwt-Assertion``: a JWT signed with the
``jwt`` CA's active key (ES256 for P-256, RS256 for RSA, EdDSA for Ed25519), ``kid`` = the key id,
claims ``iss`` (the cluster), ``sub``/``username``, ``roles``, ``traits``, ``aud`` (the app's
URI), ``iat``/``nbf``/``exp`` (at most :data:`MAX_TTL`). Apps verify it against the key set the
proxy publishes at ``/.well-known/jwks.json`` (:func:`jwks`), which lists every trusted key of
the CA, so a rotation keeps verifying.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from bastion.ca.authority import export_trust
from bastion.ca.keys import PrivateKey, key_id, private_key_to_pem
from bastion.errors import AccessDenied, BadParameter
from bastion.types.authority import CAType, CertAuthority, KeyAlgorithm
from bastion.types.identity import Identity

__all__ = [
    "ALGORITHMS",
    "MAX_TTL",
    "JwtKey",
    "app_claims",
    "ca_key_algorithm",
    "jwks",
    "verify_app_jwt",
]

MAX_TTL = timedelta(minutes=1)
"""Longest validity of an app assertion."""
ALGORITHMS = ("ES256", "RS256", "EdDSA")


class JwtKey:
    """The ``jwt`` CA's signing key, imported once for joserfc."""

    def __init__(self, key: PrivateKey) -> None:
        pem = private_key_to_pem(key)
        self.kid = key_id(key.public_key())
        self._key: ECKey | RSAKey | OKPKey
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self.alg, self._key = "ES256", ECKey.import_key(pem)
        elif isinstance(key, rsa.RSAPrivateKey):
            self.alg, self._key = "RS256", RSAKey.import_key(pem)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg, self._key = "EdDSA", OKPKey.import_key(pem)
        else:  # pragma: no cover -- generate_private_key makes only these
            raise BadParameter(f"unsupported JWT key type {type(key).__name__}")

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS over ``claims`` (header ``alg``, ``kid``, ``typ: JWT``)."""
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._key, algorithms=[self.alg])


def app_claims(
    identity: Identity, audience: str, now: datetime, ttl: timedelta = MAX_TTL
) -> dict[str, Any]:
    """The claims of an app assertion for ``identity`` (validity capped at :data:`MAX_TTL`
    and at the identity's own expiry)."""
    start = int(now.timestamp())
    end = min(now + min(ttl, MAX_TTL), identity.expires)
    return {
        "iss": identity.cluster,
        "sub": identity.user,
        "username": identity.user,
        "roles": list(identity.roles),
        "traits": {k: list(v) for k, v in sorted(identity.traits.items())},
        "aud": audience,
        "iat": start,
        "nbf": start,
        "exp": max(start, int(end.timestamp())),
    }


def jwks(ca: CertAuthority) -> dict[str, Any]:
    """The JSON Web Key Set of a ``jwt`` CA (every trusted key, public parts only)."""
    if ca.spec.type != "jwt":
        raise BadParameter(f"a {ca.spec.type} CA has no JSON Web Key Set")
    doc: dict[str, Any] = json.loads(export_trust(ca, "jwks"))
    return doc


def verify_app_jwt(token: str, key_set: dict[str, Any], audience: str, now: int) -> dict[str, Any]:
    """Verify an app assertion like an app would (tests, the bench's app, docs example).

    Raises:
        AccessDenied: bad signature, unknown key, wrong audience, expired or not yet valid.
    """
    try:
        keys = KeySet.import_key_set(key_set)  # type: ignore[arg-type]
        token_obj = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
        claims: dict[str, Any] = dict(token_obj.claims)
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=5,
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        registry.validate(claims)
    except (JoseError, ValueError) as exc:
        raise AccessDenied(f"invalid app assertion: {exc}") from None
    if int(claims["exp"]) - int(claims.get("iat", 0)) > MAX_TTL.total_seconds():
        raise AccessDenied("invalid app assertion: lifetime above one minute")
    return claims


def ca_key_algorithm(ca_type: CAType, default: KeyAlgorithm) -> KeyAlgorithm:
    """The key algorithm of a new CA key: the cluster's ``key_algorithm``, except that the
    ``jwt`` CA signs ES256 (P-256) unless RSA is configured, because app JWT libraries
    (Grafana, oauth2-proxy, most language SDKs) verify ES256/RS256 and rarely EdDSA."""
    if ca_type == "jwt" and default == "ed25519":
        return "ecdsa-p256"
    return default
