"""read_json, the JSON body parser of every API route (security review)."""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request

from bastion.errors import BadParameter
from bastion.web.body import read_json


async def _handler(request: web.Request) -> web.Response:
    try:
        return web.json_response({"parsed": await read_json(request)})
    except BadParameter as exc:
        return web.json_response({"error": exc.message}, status=400)


async def _post(body: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    """The handler's answer to a POST of ``body``, built in memory (no server, no socket)."""
    payload = streams.StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    request = make_mocked_request("POST", "/x", headers=headers, payload=payload)
    resp = await _handler(request)
    assert isinstance(resp.body, bytes)
    return resp.status, json.loads(resp.body)


async def test_the_body_is_utf8_json_whatever_charset_the_header_names() -> None:
    """The admin-MFA scope hashes the body's bytes; the handler must read those bytes one way
    only, so a replayed body with another charset cannot mean something else."""
    body = '{"name": "é"}'.encode()
    assert await _post(body, "application/json") == (200, {"parsed": {"name": "é"}})
    assert await _post(body, "application/json; charset=latin-1") == (
        200,
        {"parsed": {"name": "é"}},
    )


@pytest.mark.parametrize("charset", ["bogus", "utf-16"])
async def test_a_body_that_is_not_utf8_json_is_a_clear_error(charset: str) -> None:
    """An unknown charset was a LookupError: a 500 and a traceback in the auth log."""
    status, answer = await _post("{}".encode("utf-16"), f"application/json; charset={charset}")
    assert status == 400 and "not valid JSON" in str(answer["error"])
