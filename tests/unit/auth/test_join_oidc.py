"""The oidc join method's token checks (pure): signature, alg, iss, aud, exp, allow rules."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bastion.auth.join_oidc import JoinTokenError, claims_allowed, verify_join_token
from bastion.types.access import OIDCJoinSpec

ISSUER = "https://token.actions.example"
SPEC = OIDCJoinSpec(
    issuer=ISSUER,
    audience="bastion",
    allow=[{"repository": "org/app", "ref": "refs/heads/main"}, {"environment": "prod*"}],
)
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1"})
JWKS = KeySet([KEY]).as_dict(private=False)


def token(key: RSAKey = KEY, alg: str = "RS256", **over: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "bastion",
        "sub": "repo:org/app:ref:refs/heads/main",
        "repository": "org/app",
        "ref": "refs/heads/main",
        "iat": now,
        "exp": now + 300,
        **over,
    }
    return jwt.encode({"alg": alg, "kid": "k1"}, claims, key)


def now() -> datetime:
    return datetime.now(UTC)


def test_a_token_from_the_allowed_repository_is_accepted() -> None:
    claims = verify_join_token(token(), JWKS, SPEC, now())
    assert claims["repository"] == "org/app"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(repository="org/other"), "match no allow rule"),
        (lambda: token(ref="refs/heads/dev"), "match no allow rule"),
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(iss="https://evil.example"), "issuer"),
        (lambda: token(aud="someone-else"), "audience"),
        (lambda: token(key=OTHER), "signature"),
    ],
)
def test_refused_tokens_say_why(make: Any, reason: str) -> None:
    with pytest.raises(JoinTokenError, match=reason):
        verify_join_token(make(), JWKS, SPEC, now())


def test_alg_none_and_hmac_are_refused() -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    payload = {"iss": ISSUER, "aud": "bastion", "repository": "org/app", "exp": 2**31}
    unsigned = f"{b64({'alg': 'none'})}.{b64(payload)}."
    with pytest.raises(JoinTokenError, match="algorithm 'none'"):
        verify_join_token(unsigned, JWKS, SPEC, now())
    hs = f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{b64(payload)}.c2ln"
    with pytest.raises(JoinTokenError, match="algorithm 'HS256'"):
        verify_join_token(hs, JWKS, SPEC, now())
    with pytest.raises(ValueError, match="asymmetric"):
        OIDCJoinSpec(issuer=ISSUER, audience="a", allow=[{"sub": "x"}], algorithms=["none"])
    with pytest.raises(ValueError, match="https"):
        OIDCJoinSpec(issuer="http://x", audience="a", allow=[{"sub": "x"}])


def test_prefix_rules() -> None:
    assert claims_allowed({"environment": "prod-eu"}, SPEC.allow)
    assert not claims_allowed({"environment": "staging"}, SPEC.allow)
    assert not claims_allowed({"repository": "org/app"}, SPEC.allow)  # ref missing
