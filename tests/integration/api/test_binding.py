"""Declared endpoints served over real HTTP (aiohttp TestServer on loopback): bodies and
queries are validated into one-line errors naming the field; replies follow their models."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bastion.api.app import build_app
from bastion.api.binding import bound_endpoints
from bastion.contract import ENDPOINTS
from bastion.contract.core import Ping
from bastion.testing import make_auth, new_public_key


async def _client() -> tuple[Any, TestClient[Any, Any]]:
    fx = await make_auth()
    app = build_app(fx.auth, rate=1000.0, burst=1000, max_body=1 << 20)
    assert set(bound_endpoints(app)) <= {e.key for e in ENDPOINTS}
    return fx, TestClient(TestServer(app))


async def test_bad_bodies_are_one_line_naming_the_field() -> None:
    _, client = await _client()
    _, pub = new_public_key()
    async with client:
        cases = [
            ({"user": "a", "password": "p", "public_key": pub, "ttl": "soon"}, "ttl"),
            ({"user": "a", "password": "p", "public_key": pub, "pasword": "x"}, "pasword"),
            ({"password": "p", "public_key": pub}, "user: field required"),
        ]
        for body, named in cases:
            resp = await client.post("/v1/login", json=body)
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["code"] == "bad_parameter", error
            assert error["message"].startswith("request body: ") and named in error["message"]
            assert "\n" not in error["message"]
        resp = await client.post("/v1/login", data=b"[1, 2]")
        assert (await resp.json())["error"]["message"] == "request body must be a JSON object"


async def test_replies_follow_their_models() -> None:
    fx, client = await _client()
    async with client:
        resp = await client.get("/v1/ping")
        ping = Ping.model_validate(await resp.json())
        assert ping.cluster == fx.auth.cluster
        doc = await (await client.get("/openapi.json")).json()
        assert "/v1/login" in doc["paths"] and doc["openapi"] == "3.1.0"
