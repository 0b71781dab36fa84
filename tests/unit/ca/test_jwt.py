from datetime import UTC, datetime, timedelta

import pytest

from bastion.ca.authority import new_cert_authority, signing_key
from bastion.ca.jwt import JwtKey, app_claims, ca_key_algorithm, jwks, verify_app_jwt
from bastion.errors import AccessDenied
from bastion.testing import FakeClock
from bastion.types.identity import Identity

KEK = b"\x02" * 32


def _ident(now: datetime) -> Identity:
    return Identity(
        cluster="c",
        user="alice",
        roles=("dev",),
        traits={"t": ("v",)},
        expires=now + timedelta(hours=1),
    )


@pytest.mark.parametrize(("alg", "jws"), [("ecdsa-p256", "ES256"), ("rsa-3072", "RS256")])
def test_sign_and_verify(alg, jws):
    clock = FakeClock()
    ca = new_cert_authority("jwt", "c", alg, KEK, clock)
    key = JwtKey(signing_key(ca, KEK))
    assert key.alg == jws
    now = clock.now()
    token = key.sign(app_claims(_ident(now), "http://app", now))
    claims = verify_app_jwt(token, jwks(ca), "http://app", int(now.timestamp()))
    assert claims["sub"] == "alice" and claims["traits"] == {"t": ["v"]}
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(AccessDenied):
        verify_app_jwt(token, jwks(ca), "http://other", int(now.timestamp()))
    with pytest.raises(AccessDenied):
        verify_app_jwt(token, jwks(ca), "http://app", int(now.timestamp()) + 120)
    other = new_cert_authority("jwt", "c", alg, KEK, clock)
    with pytest.raises(AccessDenied):
        verify_app_jwt(token, jwks(other), "http://app", int(now.timestamp()))


def test_claims_capped_by_identity_expiry():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ident = _ident(now).model_copy(update={"expires": now + timedelta(seconds=10)})
    claims = app_claims(ident, "a", now, timedelta(hours=1))
    assert claims["exp"] - claims["iat"] == 10


def test_jwks_has_no_private_parts_and_jwt_ca_is_es256():
    ca = new_cert_authority("jwt", "c", "ecdsa-p256", KEK, FakeClock())
    (key,) = jwks(ca)["keys"]
    assert key["alg"] == "ES256" and "d" not in key
    assert ca_key_algorithm("jwt", "ed25519") == "ecdsa-p256"
    assert ca_key_algorithm("jwt", "rsa-3072") == "rsa-3072"
    assert ca_key_algorithm("ssh_user", "ed25519") == "ed25519"
