"""The oidc join method against an HTTPS issuer of the test's own (issue 18): discovery and a
JWKS served over TLS on loopback with keys made by the test (so it can sign the bad tokens a real
issuer never would; npm's oidc-provider is the issuer of test_bots_renewal.py). Auth fetches
them (HTTPS only, cached) and joins a bot from the allowed repository, refusing another
repository, an expired JWT, a JWT of another issuer and ``alg: none``."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bastion.auth.bots import BotService
from bastion.auth.join_oidc import JWKSCache
from bastion.clock import SystemClock
from bastion.errors import AccessDenied
from bastion.testing import make_auth, new_public_key
from bastion.testing.peers.ports import free_port
from bastion.types.access import OIDCJoinSpec

pytestmark = pytest.mark.integration

KEY = RSAKey.generate_key(2048, parameters={"kid": "gha-1"})
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "gha-1"})


def issuer_tls_files(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "issuer.crt", tmp / "issuer.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
async def issuer(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext, list[int]]]:
    cert, key = issuer_tls_files(tmp_path)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    fetches = [0]

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response({"issuer": base, "jwks_uri": f"{base}/jwks"})

    async def jwks(_: web.Request) -> web.Response:
        fetches[0] += 1
        return web.json_response(KeySet([KEY]).as_dict(private=False))

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx)
    await site.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        yield base, client_ctx, fetches
    finally:
        await runner.cleanup()


def _jwt(iss: str, key: RSAKey = KEY, **over: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": iss, "aud": "bastion", "sub": "repo:org/app:ref:refs/heads/main",
        "repository": "org/app", "ref": "refs/heads/main", "iat": now, "exp": now + 300, **over,
    }  # fmt: skip
    return jwt.encode({"alg": "RS256", "kid": "gha-1"}, claims, key)


async def test_oidc_join_allowed_and_refused(issuer: tuple[str, ssl.SSLContext, list[int]]) -> None:
    base, ctx, fetches = issuer
    fx = await make_auth(clock=SystemClock())
    bots = BotService(fx.auth, JWKSCache(ctx))
    spec = OIDCJoinSpec(
        issuer=base, audience="bastion", allow=[{"repository": "org/app", "ref": "refs/heads/*"}]
    )
    _, token = await bots.add_bot("gha", ["access"], ["deploy"], dt.timedelta(hours=1), "a", spec)
    assert token.token == "" and token.resource.spec.join_method == "oidc"
    _, pub = new_public_key()

    async def join(id_token: str) -> Any:
        return await bots.join(
            token="", id_token=id_token, bot="gha", public_key=pub,
            ttl=dt.timedelta(hours=1), remote_addr="10.1.1.1",
        )  # fmt: skip

    first = await join(_jwt(base))
    assert first.identity.kind == "bot" and first.identity.user == "bot-gha"
    second = await join(_jwt(base))  # not single use; each join is a new generation
    assert second.identity.generation == first.identity.generation + 1
    refusals = {
        "match no allow rule": _jwt(base, repository="org/other"),
        "expired": _jwt(base, exp=int(time.time()) - 600),
        "issuer": _jwt("https://evil.example"),
        "signature": _jwt(base, key=STRANGER),
    }
    for reason, bad in refusals.items():
        with pytest.raises(AccessDenied, match=reason):
            await join(bad)

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    with pytest.raises(AccessDenied, match="algorithm 'none'"):
        await join(f"{b64({'alg': 'none'})}.{b64({'iss': base, 'repository': 'org/app'})}.")
    assert fetches[0] <= 2  # cached (one refetch at most, for the stranger's unknown key)
    failed = [
        e for e in await fx.auth.audit.read_from(0, 10_000)
        if e.type == "bot.join" and e.outcome == "failure"
    ]  # fmt: skip
    assert len(failed) == 5 and all(e.reason for e in failed), failed
