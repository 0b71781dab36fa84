"""ID token verification against crafted tokens (real signatures by real keys), and the
authorization URL. Every refusal says why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from bastion.sso.oidc import (
    Discovery,
    IDTokenError,
    authorization_url,
    token_header,
    verify_id_token,
)
from bastion.types.connectors import OIDCConnector

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ISSUER = "https://idp.example.com"
CLIENT = "bastion"
NONCE = "n-0123456789"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa1"}, private=True)
EC = ECKey.generate_key("P-256", parameters={"kid": "ec1"}, private=True)
JWKS = KeySet([RSA, EC]).as_dict(private=False)


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "user-1",
        "nonce": NONCE,
        "iat": int(NOW.timestamp()) - 5,
        "exp": int(NOW.timestamp()) + 300,
        "groups": ["dev"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, object], key: object = RSA, alg: str = "RS256", kid: str = "rsa1"):
    return jwt.encode({"alg": alg, "kid": kid}, payload, key)  # type: ignore[arg-type]


def verify(token: str, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "issuer": ISSUER,
        "client_id": CLIENT,
        "nonce": NONCE,
        "algorithms": ["RS256", "ES256"],
        "now": NOW,
    }
    args.update(kw)
    return verify_id_token(token, JWKS, **args)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_rsa_and_ec_tokens_verify() -> None:
    assert verify(sign(claims()))["sub"] == "user-1"
    assert verify(sign(claims(), EC, "ES256", "ec1"))["groups"] == ["dev"]


def test_alg_none_is_refused_before_any_key() -> None:
    header = b64(json.dumps({"alg": "none"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(IDTokenError, match="algorithm 'none' is not allowed"):
        verify(token)


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The classic key confusion: HMAC keyed with the provider's public key, which anyone has.
    public_pem = RSA.as_pem(private=False)
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(IDTokenError, match="algorithm 'HS256' is not allowed"):
        verify(f"{header}.{body}.{b64(mac)}")


def test_bad_signature_is_refused() -> None:
    header, _, sig = sign(claims()).split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    with pytest.raises(IDTokenError, match="signature is invalid"):
        verify(f"{header}.{forged}.{sig}")


def test_token_signed_by_another_key_with_the_same_kid_is_refused() -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa1"}, private=True)
    with pytest.raises(IDTokenError, match="signature is invalid"):
        verify(sign(claims(), impostor))


def test_unknown_kid_is_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "nope"}, private=True)
    with pytest.raises(IDTokenError, match="signature is invalid"):
        verify(sign(claims(), other, kid="nope"))


def test_algorithm_not_allowed_by_the_connector_is_refused() -> None:
    with pytest.raises(IDTokenError, match="'ES256' is not allowed"):
        verify(sign(claims(), EC, "ES256", "ec1"), algorithms=["RS256"])


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": ["someone-else", CLIENT]}, "azp"),
        ({"nonce": "other-nonce"}, "nonce does not match"),
        ({"nonce": None}, "nonce does not match"),
        ({"exp": int(NOW.timestamp()) - 61}, "expired"),
        ({"exp": None}, "expired"),
        ({"iat": int(NOW.timestamp()) + 120}, "issued in the future"),
        ({"sub": None}, "no subject"),
    ],
)
def test_bad_claims_are_refused_with_the_reason(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(IDTokenError, match=reason):
        verify(sign(claims(**overrides)))


def test_small_clock_skew_is_tolerated() -> None:
    token = sign(claims(exp=int(NOW.timestamp()) - 30, iat=int(NOW.timestamp()) + 30))
    assert verify(token)["sub"] == "user-1"


def test_several_audiences_need_azp() -> None:
    assert verify(sign(claims(aud=["other", CLIENT], azp=CLIENT)))["sub"] == "user-1"


@pytest.mark.parametrize("junk", ["", "a.b", "a.b.c.d", "!!!.e30.", "W10.e30.x"])
def test_junk_is_an_id_token_error(junk: str) -> None:
    with pytest.raises(IDTokenError):
        verify(junk)


def test_token_header_is_decoded() -> None:
    assert token_header(sign(claims()))["kid"] == "rsa1"


def test_discovery_must_name_the_connector_issuer() -> None:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
    }
    assert Discovery.parse(doc, ISSUER).token_endpoint.endswith("/token")
    with pytest.raises(Exception, match="expects"):
        Discovery.parse({**doc, "issuer": "https://evil"}, ISSUER)
    with pytest.raises(Exception, match="lacks 'jwks_uri'"):
        Discovery.parse({k: v for k, v in doc.items() if k != "jwks_uri"}, ISSUER)


def test_authorization_url_has_pkce_state_and_nonce() -> None:
    connector = OIDCConnector.model_validate(
        {
            "metadata": {"name": "okta"},
            "spec": {
                "issuer_url": ISSUER,
                "client_id": CLIENT,
                "claims_to_roles": [{"claim": "groups", "value": "dev", "roles": ["access"]}],
            },
        }
    )
    discovery = Discovery(ISSUER, f"{ISSUER}/auth", f"{ISSUER}/token", f"{ISSUER}/jwks")
    verifier = "v" * 50
    url = authorization_url(discovery, connector, "https://proxy/cb", "st", "no", verifier)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    expected = b64(hashlib.sha256(verifier.encode()).digest())
    assert query["code_challenge"] == expected
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == "st" and query["nonce"] == "no"
    assert query["response_type"] == "code" and query["client_id"] == CLIENT
    assert query["scope"].split() == ["openid", "email", "profile"]
    assert verifier not in url


@given(
    st.text(max_size=300)
    | st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(), st.text(), st.text())
)
def test_only_id_token_errors_escape_on_garbage(token: str) -> None:
    with pytest.raises(IDTokenError):
        verify(token)


@given(st.binary(max_size=200))
def test_truncated_or_corrupted_valid_tokens_are_refused(noise: bytes) -> None:
    good = sign(claims())
    cut = len(noise) % len(good)
    corrupted = good[:cut] + noise.hex()[: len(good) - cut]
    if corrupted == good:
        return
    with pytest.raises(IDTokenError):
        verify(corrupted)


def test_google_is_asked_for_a_refresh_token_when_logins_are_revalidated() -> None:
    def query_for(issuer: str, interval: str) -> dict[str, str]:
        connector = OIDCConnector.model_validate(
            {
                "metadata": {"name": "g"},
                "spec": {
                    "issuer_url": issuer,
                    "client_id": CLIENT,
                    "revalidate_interval": interval,
                    "claims_to_roles": [{"claim": "hd", "value": "x.com", "roles": ["access"]}],
                },
            }
        )
        discovery = Discovery(issuer, f"{issuer}/auth", f"{issuer}/token", f"{issuer}/jwks")
        url = authorization_url(discovery, connector, "https://proxy/cb", "st", "no", "v" * 50)
        return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}

    assert query_for("https://accounts.google.com", "15m")["access_type"] == "offline"
    assert "access_type" not in query_for("https://accounts.google.com", "0s")
    assert "access_type" not in query_for(ISSUER, "15m")
